// Mirror of smsgw_common/segments.py: GSM 03.38 alphabets and segment counting.
// The server decides; this gives the same numbers while the user types
// (tests compare both on the same strings).

const GSM7_BASIC =
  "@£$¥èéùìòÇ\nØø\rÅå" +
  "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ" +
  " !\"#¤%&'()*+,-./" +
  "0123456789:;<=>?" +
  "¡ABCDEFGHIJKLMNO" +
  "PQRSTUVWXYZÄÖÑÜ§" +
  "¿abcdefghijklmno" +
  "pqrstuvwxyzäöñüà";

const BASIC = new Set([...GSM7_BASIC].filter((ch) => ch !== "\x1b"));
const EXTENSION = new Set(["\x0c", "^", "{", "}", "\\", "[", "~", "]", "|", "€"]);

export const GSM7 = "GSM-7";
export const UCS2 = "UCS-2";
const LIMITS = { [GSM7]: [160, 153], [UCS2]: [70, 67] };

// Iterating a string yields code points, like Python's str.
const chars = (text) => Array.from(text);

export function isGsm7(text) {
  return chars(text).every((ch) => BASIC.has(ch) || EXTENSION.has(ch));
}

const gsm7Units = (ch) => (EXTENSION.has(ch) ? 2 : 1);
const ucs2Units = (ch) => (ch.codePointAt(0) > 0xffff ? 2 : 1);

export function analyze(text) {
  const list = chars(text);
  const encoding = isGsm7(text) ? GSM7 : UCS2;
  const unit = encoding === GSM7 ? gsm7Units : ucs2Units;
  const units = list.reduce((n, ch) => n + unit(ch), 0);
  const [single, multi] = LIMITS[encoding];
  const characters = list.length;
  if (units <= single) {
    return { encoding, units, segments: units ? 1 : 0, per_segment: single, remaining: single - units, characters };
  }
  // A character never straddles two segments, so a part may end short.
  let segments = 1;
  let used = 0;
  for (const ch of list) {
    const size = unit(ch);
    if (used + size > multi) {
      segments += 1;
      used = 0;
    }
    used += size;
  }
  return { encoding, units, segments, per_segment: multi, remaining: multi - used, characters };
}

// Characters that force UCS-2, for the hint under the counter.
export function nonGsmChars(text) {
  return [...new Set(chars(text).filter((ch) => !BASIC.has(ch) && !EXTENSION.has(ch)))];
}
