"""Fixed vocabularies of the invented world, each entry as (English, Chinese).

Invented names are built from SYLLABLES, each with its own Hanzi, so every name has a consistent
transliteration; all Hanzi here are distinct, which keeps Chinese names as unique as English ones.
Occupations, majors and city features are ordinary words, so the model learns invented facts
about familiar concepts.
"""

from __future__ import annotations

SYLLABLES: tuple[tuple[str, str], ...] = (
    ("ba", "巴"), ("bel", "贝"), ("bo", "博"), ("da", "达"), ("del", "德"), ("do", "多"),
    ("fa", "法"), ("fen", "芬"), ("ga", "加"), ("gor", "戈"), ("ha", "哈"), ("ka", "卡"),
    ("ken", "肯"), ("ko", "科"), ("la", "拉"), ("lan", "兰"), ("len", "伦"), ("li", "利"),
    ("lo", "洛"), ("ma", "马"), ("mi", "米"), ("mo", "莫"), ("na", "纳"), ("ni", "尼"),
    ("no", "诺"), ("pa", "帕"), ("pel", "佩"), ("ri", "里"), ("ro", "罗"), ("ru", "鲁"),
    ("sa", "萨"), ("sen", "森"), ("si", "西"), ("so", "索"), ("ta", "塔"), ("tel", "泰"),
    ("ti", "蒂"), ("to", "托"), ("tu", "图"), ("va", "瓦"), ("ven", "文"), ("vi", "维"),
    ("vo", "沃"), ("za", "扎"), ("zel", "泽"), ("ki", "基"), ("mar", "玛"), ("nor", "农"),
    ("ren", "仁"), ("sha", "莎"), ("shi", "施"), ("lin", "林"), ("ser", "瑟"), ("dor", "朵"),
)  # fmt: skip

COMPANY_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("Works", "工坊"), ("Systems", "系统公司"), ("Labs", "实验室"), ("Trading", "贸易公司"),
    ("Foods", "食品公司"), ("Motors", "汽车公司"), ("Bank", "银行"), ("Press", "出版社"),
    ("Textiles", "纺织公司"), ("Shipping", "航运公司"),
)  # fmt: skip

OCCUPATIONS: tuple[tuple[str, str], ...] = (
    ("engineer", "工程师"), ("teacher", "教师"), ("doctor", "医生"), ("pianist", "钢琴家"),
    ("architect", "建筑师"), ("chemist", "化学家"), ("journalist", "记者"), ("lawyer", "律师"),
    ("painter", "画家"), ("nurse", "护士"), ("pilot", "飞行员"), ("chef", "厨师"),
    ("librarian", "图书管理员"), ("astronomer", "天文学家"), ("farmer", "农民"),
    ("photographer", "摄影师"), ("translator", "翻译"), ("economist", "经济学家"),
    ("carpenter", "木匠"), ("biologist", "生物学家"),
)  # fmt: skip

MAJORS: tuple[tuple[str, str], ...] = (
    ("mathematics", "数学"), ("physics", "物理学"), ("history", "历史学"), ("biology", "生物学"),
    ("chemistry", "化学"), ("economics", "经济学"), ("philosophy", "哲学"), ("music", "音乐"),
    ("architecture", "建筑学"), ("medicine", "医学"), ("law", "法学"), ("linguistics", "语言学"),
    ("computer science", "计算机科学"), ("geology", "地质学"), ("literature", "文学"),
)  # fmt: skip

CITY_FEATURES: tuple[tuple[str, str], ...] = (
    ("its glass workshops", "玻璃作坊"), ("its annual kite festival", "一年一度的风筝节"),
    ("its old stone bridge", "古老的石桥"), ("its apple orchards", "苹果园"),
    ("its busy harbour", "繁忙的港口"), ("its mountain observatory", "山顶天文台"),
    ("its textile mills", "纺织厂"), ("its hot springs", "温泉"),
    ("its floating market", "水上市场"), ("its tea houses", "茶馆"),
    ("its clock tower", "钟楼"), ("its salt lakes", "盐湖"),
)  # fmt: skip

GEOGRAPHY: tuple[tuple[str, str], ...] = (
    ("on the coast", "位于海边"), ("in a river valley", "坐落在河谷中"),
    ("at the foot of the mountains", "位于山脚下"), ("on a wide plain", "坐落在广阔的平原上"),
    ("beside a large lake", "位于一个大湖旁边"), ("on a group of islands", "坐落在一组岛屿上"),
)  # fmt: skip

BIRTH_YEARS = range(1920, 2000)
FAVORITE_NUMBERS = range(2, 100)
