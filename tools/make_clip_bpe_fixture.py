r"""Regenerates tests/fixtures/clip_bpe_captions.json: open_clip's ids for fixed captions.

  pip install torch==2.13.0 && pip install --no-deps open_clip_torch && pip install ftfy regex
  python tools/make_clip_bpe_fixture.py          # writes the fixture
  python tools/make_clip_bpe_fixture.py --check  # compares mmjax's clip_bpe with open_clip

The fixture is the independent reference for `clip_bpe` (tests/test_data_tokenizers.py):
the captions below, tricky ones included (unicode, emoji, accents, HTML entities, URLs,
mojibake, very long, empty, whitespace only), with the ids open_clip's `tokenize` gives.
open_clip's tokenizer module is loaded from its file, because importing the open_clip
package pulls in torchvision, which may not import beside the installed torch.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "clip_bpe_captions.json"
sys.path.insert(0, str(REPO))

from mmjax import errors  # noqa: E402

REALISTIC = [
    "a photo of a cat sitting on a windowsill",
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing in the snow",
    "a close-up of a red rose with water droplets",
    "Aerial view of New York City at night",
    "Vintage 1960s Ford Mustang convertible, cherry red",
    "Women's Summer Floral Maxi Dress - Size M",
    "IKEA KALLAX shelf unit, white, 77x147 cm",
    "Sunset over the Pacific Ocean from Big Sur, California",
    "a bowl of ramen with egg, nori and green onions",
    "Portrait of a young woman in the style of Vermeer",
    "DIY wooden coffee table | Step-by-step tutorial",
    "Stock photo: business people shaking hands in office",
    "The Eiffel Tower, Paris, France (2019)",
    "A kitchen with stainless steel appliances and granite countertops.",
    "baby elephant walking behind its mother in the savanna",
    "Watercolor painting of mountains and a lake",
    "Nike Air Max 90 - Men's Running Shoes - Black/White",
    "an astronaut floating above the earth",
    "Close up of a honey bee collecting pollen from a sunflower",
    "Street food vendor in Bangkok selling mango sticky rice",
    "Wedding cake with three tiers and fresh flowers",
    "A train crossing a bridge in the Swiss Alps",
    "Cute kitten sleeping in a basket of yarn",
    "Minimalist living room interior with a grey sofa",
    "A person holding a smartphone displaying a map",
    "Old lighthouse on a rocky coast during a storm",
    "Fresh vegetables at a farmers' market",
    "children playing soccer in a park on a sunny day",
    "Abstract geometric pattern in blue and gold",
    "The Great Wall of China winding over green hills",
    "a plate of spaghetti carbonara with parmesan",
    "Black and white photograph of a jazz musician playing saxophone",
    "Hand-drawn illustration of a fox in a forest",
    "Snow-covered pine trees under a starry sky",
    "Row of colorful houses along a canal in Amsterdam",
    "A glass of red wine on a wooden table",
    "Skateboarder doing a kickflip at a skate park",
    "Macro shot of a dew-covered spider web",
    "Hot air balloons over Cappadocia at sunrise",
]

TRICKY = [
    "",
    " ",
    "   \t\n  ",
    "\u00a0\u3000\u2003",
    "\n",
    "café crème brûlée",
    "cafe\u0301 (combining accent)",
    "naïve résumé façade coöperate",
    "Ångström Øresund Łódź Škoda",
    "straße STRASSE Straße",
    "İstanbul ıi",
    "東京タワーの夜景",
    "北京烤鸭 和 饺子",
    "서울의 밤 풍경",
    "Москва — столица России",
    "Αθήνα, Ελλάδα",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "ภาษาไทย สวัสดี",
    "I ❤️ NY",
    "😀😃😄😁😆",
    "family: 👨‍👩‍👧‍👦",
    "flags 🇺🇸🇫🇷🇯🇵",
    "thumbs up 👍🏽 skin tone",
    "rocket🚀launch",
    "Tom &amp; Jerry",
    "&lt;b&gt;bold&lt;/b&gt; text",
    "5 &gt; 3 &amp;&amp; 2 &lt; 4",
    "it&#39;s &quot;quoted&quot;",
    "double &amp;amp; escaped &amp;lt;tag&amp;gt;",
    "&nbsp;non-breaking&nbsp;space",
    "&eacute;l&egrave;ve &copy; 2020 &trade;",
    "&#x1F600; hex emoji entity",
    "<p>Some <em>HTML</em> tags</p>",
    "https://www.example.com/path/to/image.jpg?size=large&id=123#top",
    "Visit http://example.org or www.test.co.uk for more!",
    "email me at someone@example.com",
    "#hashtag #travel #photooftheday @user_name",
    "cafÃ© mojibake",
    "Thatâ€™s what she said",
    "“curly quotes” and ‘single’ ones",
    "em—dash and en–dash … ellipsis",
    "don't can't won't I'm you're we've they'll he'd",
    "DON'T CAN'T I'M",
    "rock'n'roll o'clock",
    "1,000,000 dollars and 3.14159",
    "2023-10-05 12:34:56",
    "½ cup of sugar, 2² = 4, ① ② ③",
    "٣ Arabic-Indic digit and ५ Devanagari digit",
    "$19.99 €15 £10 ¥1000",
    "100% cotton, 50°C wash",
    "C++ and C# and F#",
    "snake_case and camelCase and kebab-case",
    "ALL CAPS SHOUTING CAPTION",
    "MiXeD CaSe CaPtIoN",
    "   leading and trailing spaces   ",
    "multiple     internal\t\ttabs\n\nand newlines",
    "zero\u200bwidth\u200cjoiner\u200dtest",
    "soft\u00adhyphen",
    "control\x07bell\x1bescape",
    "replacement \ufffd char",
    "<start_of_text> literal special",
    "text with <end_of_text> in the middle",
    "<|endoftext|> gpt style",
    "!!!???...,,,;;;",
    "((nested (parentheses)))",
    "\"double\" 'single' `back`",
    "a" * 300,
    "supercalifragilisticexpialidocious " * 10,
    "1234567890" * 10,
    "! " * 100,
    "东京" * 80,
    "😀" * 100,
    " ".join(["word"] * 75),
    " ".join(["word"] * 76),
    " ".join(["word"] * 77),
    "the " * 200,
    "x",
    "?",
    "ñ",
    "🙂",
    "\u3000full width space",
    "ＦＵＬＬ ＷＩＤＴＨ ｌｅｔｔｅｒｓ",
    "Ⅻ roman numeral ⅷ",
    "ﬁ ligature ﬂ",
    "math 𝐀𝐁𝐂 𝔸𝔹ℂ",
    "tab\tseparated\tvalues",
    "windows\r\nline endings",
]

DERIVED = (
    lambda s: s.upper(),
    lambda s: s.replace(" ", "  ") + "  ",
    lambda s: s.replace("a", "&amp;").replace("e", "&#233;"),
    lambda s: f"{s} 🔥😍 #amazing",
    lambda s: f"{s} https://cdn.example.com/img/{len(s)}.jpg",
    lambda s: " | ".join([s] * 6),  # long
)


def captions() -> list[str]:
    """The fixed caption list: realistic, tricky, and variants of the realistic ones."""
    out = REALISTIC + TRICKY
    for f in DERIVED:
        out += [f(s) for s in REALISTIC[:20]]
    return out


def open_clip_tokenize():
    """open_clip's `tokenize`, loaded from its file (see the module docstring)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise errors.MissingPackageError(
            "open_clip_torch is not installed (see the module docstring)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.tokenize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(FIXTURE))
    parser.add_argument("--check", action="store_true", help="compare with mmjax, write nothing")
    args = parser.parse_args()
    tokenize = open_clip_tokenize()
    texts = captions()
    ids = tokenize(texts, context_length=77).numpy()
    if args.check:
        from mmjax.data.clip_bpe import ClipBpeTokenizer

        ours = ClipBpeTokenizer(77)
        bad = [t for t, want in zip(texts, ids) if (ours(t) != want).any()]
        print(f"{len(texts) - len(bad)}/{len(texts)} captions equal open_clip's ids.")
        for t in bad:
            print(f"  differs: {t[:80]!r}")
        sys.exit(1 if bad else 0)
    cases = [{"text": t, "ids": [int(i) for i in row if i]} for t, row in zip(texts, ids)]
    fixture = {
        "generated_by": "python tools/make_clip_bpe_fixture.py",
        "open_clip_torch": importlib.metadata.version("open_clip_torch"),
        "ftfy": importlib.metadata.version("ftfy"),
        "context_length": 77,
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(fixture, ensure_ascii=False, indent=0) + "\n")
    print(f"Wrote {len(cases)} captions to {args.out}.")


if __name__ == "__main__":
    errors.run(main)
