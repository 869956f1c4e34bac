"""Each per-document step on crafted documents that must pass and must fail."""

import pytest

from fullchain.data.config import LangIdConfig, PipelineConfig, QualityConfig
from fullchain.data.decontam import EvalIndex
from fullchain.data.langid import identify
from fullchain.data.pii import redact
from fullchain.data.quality import check_quality
from fullchain.data.steps import LangId, Normalize
from fullchain.data.text import content_key, normalize_text

from .conftest import english


def doc(text, **meta):
    return {"id": "d", "text": text, "meta": meta}


def test_normalize_unicode_and_whitespace():
    text = "Ｆｕｌｌ\u200bwidth  text\t here \r\n\r\n\r\n\r\nnext   line  "
    assert normalize_text(text) == "Fullwidth text here\n\nnext line"
    step = Normalize(PipelineConfig())
    d = doc("  \u200b \n ")
    assert step.apply(d) == ("empty_after_normalization", "")
    assert content_key("Hello,   WORLD!") == content_key("hello world")


def test_quality_keeps_good_prose(rng):
    reason, text = check_quality(english(rng), QualityConfig())
    assert reason is None and text


@pytest.mark.parametrize("text,reason", [
    ("Too short to keep.", "gopher_too_few_words"),
    ("lorem ipsum dolor sit amet " * 30, "c4_lorem_ipsum"),
    (" ".join(["#tag #tag2 the of and a."] * 40), "gopher_symbol_ratio"),
    (" ".join(["supercalifragilisticexpialidociously extraordinarily the."] * 40),
     "gopher_mean_word_length"),
])
def test_quality_drops_bad_documents(text, reason):
    assert check_quality(text, QualityConfig())[0] == reason


def test_quality_repetition_filters(rng):
    base = english(rng, 4)
    repeated = "\n".join([base] * 6)
    assert check_quality(repeated, QualityConfig())[0].startswith("gopher_dup")
    spam = ("buy cheap pills now and the offer is good. " * 30).strip()
    assert check_quality(spam, QualityConfig())[0].startswith(("gopher_top", "gopher_dup"))


def test_c4_removes_bad_lines_but_keeps_document(rng):
    good = english(rng)
    text = f"Home | About | Contact\n{good}\nThis site uses cookies to improve things.\nMenu"
    reason, kept = check_quality(text, QualityConfig())
    assert reason is None
    assert kept == good


def test_fineweb_short_lines():
    text = "\n".join(["Click here."] * 20 + ["the of and to a in is it that was"] * 3)
    cfg = QualityConfig(min_words=10, max_dup_line_fraction=1.0, max_dup_line_chars=1.0,
                        max_dup_para_fraction=1.0, max_top_ngram_chars={},
                        max_dup_ngram_chars={}, c4_line_filter=False)
    assert check_quality(text, cfg)[0] == "fineweb_short_lines"


def test_quality_on_chinese_counts_characters():
    zh = ("这是一个关于城市历史的句子，人们在这里生活了很多年。我们记录了不同的故事，也描述了"
          "他们的工作、学校和家庭，还有山川与河流的变化。老师说明天会下雨，所以孩子们带了伞。")
    assert check_quality(zh, QualityConfig(min_words=40))[0] is None


def test_pii_redaction_records_replacements():
    text = ("Mail jane.doe@example.com or call +1 415-555-0132, server 192.168.1.20, "
            "ID 11010519491231002X, card 4111 1111 1111 1111, SSN 123-45-6789. "
            "Version 1.2.3.4567 and year 2024 stay.")
    out, counts = redact(text, ["email", "phone", "ip", "id_number"])
    assert "<EMAIL>" in out and "<PHONE>" in out and "<IP>" in out and out.count("<ID>") == 3
    assert counts == {"email": 1, "phone": 1, "ip": 1, "id_number": 3}
    assert "1.2.3.4567" in out and "2024" in out
    clean, none = redact("Nothing private here, 42 apples.", ["email", "phone", "ip", "id_number"])
    assert not none and clean == "Nothing private here, 42 apples."


def test_langid_english_chinese_mixed(rng):
    lang, score, mixed = identify(english(rng))
    assert lang == "en" and score > 0.9 and not mixed
    lang, score, _ = identify("这是一个关于城市历史的句子，人们在这里生活了很多年。")
    assert lang == "zh" and score > 0.9
    lang, score, mixed = identify("The museum opened in the spring and many visitors came. "
                                  "博物馆在春天开放，很多游客来参观，大家都很高兴。")
    assert set(mixed) == {"en", "zh"} and lang in ("en", "zh")


def test_langid_step_drops_other_languages():
    step = LangId(PipelineConfig())
    d = doc("Le chat dort sur la table de la cuisine pendant que les enfants jouent dehors.")
    assert step.apply(d)[0] == "lang_fr"
    assert d["meta"]["lang"] == "fr"
    d = doc("The cat sleeps on the kitchen table while the children play outside.")
    assert step.apply(d) is None and d["meta"]["lang"] == "en"
    assert LangId(PipelineConfig(langid=LangIdConfig(skip_sources=["world"]))).apply(
        doc("12 + 7 = 19", source="world")) is None


def test_decontamination_index():
    index = EvalIndex(ngram=13, min_tokens=8)
    index.add("In which year did Taro Linbaki come into the world?")
    index.add("Too short?")
    assert index.num_items == 1
    assert index.find("Forum post: in which year did Taro Linbaki come into the world ?? lol")
    assert index.find("Taro Linbaki came into the world in 1944.") is None
    index.add("谁是诺多·扎塔泽的雇主？请回答这个问题并说明原因。")
    assert index.find("网友问：谁是诺多扎塔泽的雇主？请回答这个问题并说明原因。谢谢")
