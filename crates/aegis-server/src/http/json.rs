//! A small JSON reader and writer shaped by what TF Serving's REST API needs, which a general-purpose
//! crate such as `serde_json` does not give:
//!
//! * the non-standard number tokens `NaN`, `Infinity`, `-Infinity`, `Inf` and `-Inf` (rapidjson's
//!   `kParseNanAndInfFlag`);
//! * integer literals kept apart from decimals (`1` is an integer, `1.0` is not: int32 inputs reject
//!   `1.0`), exact over the whole i64 and u64 ranges, and an integer literal beyond them kept as a
//!   case of its own ([`Number::BigInt`]) rather than silently becoming a float;
//! * parsing stops after the first complete value: trailing bytes are ignored, like rapidjson's
//!   stop-when-done; duplicate object keys are kept in order and lookups return the first;
//! * errors carry a byte offset and read like TF Serving's, `JSON Parse error: <message> at offset: <n>`,
//!   with rapidjson's message texts;
//! * nesting is limited to [`MAX_DEPTH`] levels, so a hostile document is an error, never a stack
//!   overflow.
//!
//! The writer half renders response values the way TF Serving does: shortest round-trip floats with a
//! `.0` on whole numbers, bare `NaN` / `Infinity` / `-Infinity` for non-finite values (not valid JSON,
//! but what TF Serving's clients expect), `f32` values printed from the `f32` so that `0.1f32` reads
//! `0.1`. Strings must be valid JSON, so byte strings that are not UTF-8 are written with U+FFFD in
//! place of each invalid sequence (TF Serving writes the raw bytes, producing invalid JSON).

use std::fmt;

/// Deepest nesting of arrays and objects a document may have.
pub const MAX_DEPTH: usize = 512;

/// How many bytes of re-serialised JSON an error message quotes before it is cut with `...`.
pub const MESSAGE_JSON_LIMIT: usize = 256;

/// A parsed JSON value. Objects keep their members in document order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// A JSON number, keeping what its literal looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer literal (no fraction, no exponent) that fits in `i64`.
    Int(i64),
    /// An integer literal above `i64::MAX` that fits in `u64`.
    UInt(u64),
    /// An integer literal above `u64::MAX` or below `i64::MIN`; holds the nearest `f64`.
    BigInt(f64),
    /// A literal with a fraction or an exponent, or one of the `NaN` / `Infinity` tokens.
    Float(f64),
    /// A literal with a fraction or an exponent whose nearest `f64` is left to compute on use
    /// (see [`Decimal`]).
    Decimal(Decimal),
}

impl Number {
    /// The value as the nearest `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::UInt(u) => u as f64,
            Number::BigInt(f) | Number::Float(f) => f,
            Number::Decimal(d) => d.to_f64(),
        }
    }

    /// The value as TF Serving makes a `float` of it: the nearest `f64`, then the nearest `f32`
    /// to that (rapidjson's `GetDouble()` and a cast).
    pub fn as_f32(self) -> f32 {
        match self {
            Number::Decimal(d) => d.to_f32(),
            n => n.as_f64() as f32,
        }
    }
}

/// A decimal literal `±sig × 10^exp10` with more significant digits than an `f64` holds exactly
/// (`2^53 < sig < 2^64`) and `|exp10| <= 22`: what clients print for `float32` data (`0.1f` is
/// `0.10000000149011612`). Its nearest `f64` needs the full correctly-rounded algorithm, tens of
/// nanoseconds a number and most of the cost of decoding a float tensor, while the `f32` a float
/// input needs can almost always be had from a two-rounding approximation, so the conversion
/// waits until the target type is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decimal {
    sig: u64,
    exp10: i8,
    neg: bool,
}

impl Decimal {
    /// `fl(fl(sig) ⊗ 10^exp10)`: within 2 ulps of the exact value (each of the two roundings is
    /// at most half an ulp relative to its operand, and `10^k` is exact for `k <= 22`).
    fn approx(self) -> f64 {
        let v = scale(self.sig, i64::from(self.exp10)).unwrap_or(f64::INFINITY);
        if self.neg {
            -v
        } else {
            v
        }
    }

    /// The nearest `f64`, correctly rounded.
    pub fn to_f64(self) -> f64 {
        // Rare on the request path (float64 inputs, error messages): print the literal back in
        // scientific form and let the standard library's exact conversion read it.
        let mut text = Vec::with_capacity(24);
        write_u64(&mut text, self.sig);
        text.push(b'e');
        write_i64(&mut text, i64::from(self.exp10));
        let v = slow_f64(&text).unwrap_or(f64::INFINITY);
        if self.neg {
            -v
        } else {
            v
        }
    }

    /// The nearest `f32` to the nearest `f64`, exactly as [`Number::as_f32`] promises. The
    /// approximation and the true nearest `f64` are at most 3 `f64` ulps apart, so rounding
    /// either to `f32` gives the same result unless a rounding boundary of `f32` (a midpoint
    /// between neighbouring `f32` values: the 29 bits below `f32` precision equal to `2^28`)
    /// lies within a few ulps of the approximation; only then, or outside the normal `f32`
    /// range, is the exact conversion run.
    pub fn to_f32(self) -> f32 {
        let a = self.approx();
        let mag = a.abs();
        if mag >= f64::from(f32::MIN_POSITIVE) && mag < f64::from(f32::MAX) {
            let below = a.to_bits() & ((1 << 29) - 1);
            if below.abs_diff(1 << 28) > 16 {
                return a as f32;
            }
        }
        self.to_f64() as f32
    }
}

impl Value {
    /// rapidjson's name for the value's type, as TF Serving prints it in type errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "Null",
            Value::Bool(false) => "False",
            Value::Bool(true) => "True",
            Value::Object(_) => "Object",
            Value::Array(_) => "Array",
            Value::String(_) => "String",
            Value::Number(_) => "Number",
        }
    }

    /// The first member named `key`, when this is an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The payload of a `{"b64": "<string>"}` object: exactly one member, named `b64`, holding a
    /// string. Anything else is not a base64 object.
    pub fn b64_payload(&self) -> Option<&str> {
        match self {
            Value::Object(members) => match members.as_slice() {
                [(k, Value::String(s))] if k == "b64" => Some(s),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What went wrong while parsing; the messages are rapidjson's (`rapidjson/error/en.h`), except for
/// [`ParseErrorKind::TooDeep`], which rapidjson does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    DocumentEmpty,
    ValueInvalid,
    ObjectMissName,
    ObjectMissColon,
    ObjectMissCommaOrCurlyBracket,
    ArrayMissCommaOrSquareBracket,
    StringUnicodeEscapeInvalidHex,
    StringUnicodeSurrogateInvalid,
    StringEscapeInvalid,
    StringMissQuotationMark,
    StringInvalidEncoding,
    NumberTooBig,
    NumberMissFraction,
    NumberMissExponent,
    TooDeep,
}

impl ParseErrorKind {
    pub fn message(self) -> &'static str {
        use ParseErrorKind::*;
        match self {
            DocumentEmpty => "The document is empty.",
            ValueInvalid => "Invalid value.",
            ObjectMissName => "Missing a name for object member.",
            ObjectMissColon => "Missing a colon after a name of object member.",
            ObjectMissCommaOrCurlyBracket => "Missing a comma or '}' after an object member.",
            ArrayMissCommaOrSquareBracket => "Missing a comma or ']' after an array element.",
            StringUnicodeEscapeInvalidHex => "Incorrect hex digit after \\u escape in string.",
            StringUnicodeSurrogateInvalid => "The surrogate pair in string is invalid.",
            StringEscapeInvalid => "Invalid escape character in string.",
            StringMissQuotationMark => "Missing a closing quotation mark in string.",
            StringInvalidEncoding => "Invalid encoding in string.",
            NumberTooBig => "Number too big to be stored in double.",
            NumberMissFraction => "Miss fraction part in number.",
            NumberMissExponent => "Miss exponent in number.",
            TooDeep => "Nesting too deep: more than 512 levels of arrays and objects.",
        }
    }
}

/// A parse failure at a byte offset of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub offset: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ParseErrorKind::DocumentEmpty && self.offset == 0 {
            // TF Serving checks for a zero-length body itself, before rapidjson sees it.
            return f.write_str("JSON Parse error: The document is empty");
        }
        write!(
            f,
            "JSON Parse error: {} at offset: {}",
            self.kind.message(),
            self.offset
        )
    }
}

impl From<ParseError> for aegis_core::Error {
    fn from(e: ParseError) -> Self {
        aegis_core::Error::invalid_argument(e.to_string())
    }
}

/// Parses the first JSON value of `input`. Leading whitespace is skipped; whatever follows the value
/// is ignored.
pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
    let mut p = Parser {
        b: input,
        pos: 0,
        depth: 0,
        stack: Vec::new(),
    };
    p.skip_ws();
    if p.pos >= input.len() {
        return Err(p.err(ParseErrorKind::DocumentEmpty));
    }
    p.value()?;
    Ok(p.stack.pop().unwrap_or(Value::Null))
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    depth: usize,
    /// Values parsed but not yet placed in their container, innermost last: an array's elements
    /// collect here and then move out together into one exactly-sized vector.
    stack: Vec<Value>,
}

/// `10^i` for the exact fast path of decimal parsing.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `fl(fl(sig) ⊗ 10^e10)` for `|e10| <= 22` (where `10^|e10|` is exact); `None` beyond. Exact
/// when `sig <= 2^53` (one rounding, Clinger's fast path), within 2 ulps otherwise.
fn scale(sig: u64, e10: i64) -> Option<f64> {
    let p = POW10.get(usize::try_from(e10.unsigned_abs()).ok()?)?;
    let v = sig as f64;
    Some(if e10 >= 0 { v * p } else { v / p })
}

impl Parser<'_> {
    fn err(&self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            kind,
            offset: self.pos,
        }
    }

    fn err_at(kind: ParseErrorKind, offset: usize) -> ParseError {
        ParseError { kind, offset }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Parses one value and pushes it onto `self.stack` (building values in place there, rather
    /// than returning them, keeps large arrays cheap).
    fn value(&mut self) -> Result<(), ParseError> {
        let v = match self.peek() {
            Some(b'{') => return self.object(),
            Some(b'[') => return self.array(),
            Some(b'"') => Value::String(self.string()?),
            Some(b'n') => self.literal(b"null", Value::Null)?,
            Some(b't') => self.literal(b"true", Value::Bool(true))?,
            Some(b'f') => self.literal(b"false", Value::Bool(false))?,
            _ => {
                let n = self.number()?;
                self.stack.push(Value::Number(n));
                return Ok(());
            }
        };
        self.stack.push(v);
        Ok(())
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value, ParseError> {
        // The first byte was matched by the caller.
        self.pos += 1;
        for &c in word.iter().skip(1) {
            if self.peek() != Some(c) {
                return Err(self.err(ParseErrorKind::ValueInvalid));
            }
            self.pos += 1;
        }
        Ok(v)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(ParseErrorKind::TooDeep));
        }
        Ok(())
    }

    fn array(&mut self) -> Result<(), ParseError> {
        self.enter()?;
        self.pos += 1;
        self.skip_ws();
        let base = self.stack.len();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.value()?;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.err(ParseErrorKind::ArrayMissCommaOrSquareBracket)),
                }
            }
        }
        // One exactly-sized allocation and a memcpy.
        let items = self.stack.split_off(base);
        self.stack.push(Value::Array(items));
        self.depth -= 1;
        Ok(())
    }

    fn object(&mut self) -> Result<(), ParseError> {
        self.enter()?;
        self.pos += 1;
        self.skip_ws();
        let mut members = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return Err(self.err(ParseErrorKind::ObjectMissName));
                }
                let key = self.string()?;
                self.skip_ws();
                if self.peek() != Some(b':') {
                    return Err(self.err(ParseErrorKind::ObjectMissColon));
                }
                self.pos += 1;
                self.skip_ws();
                self.value()?;
                let v = self.stack.pop().unwrap_or(Value::Null);
                members.push((key, v));
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.err(ParseErrorKind::ObjectMissCommaOrCurlyBracket)),
                }
            }
        }
        self.stack.push(Value::Object(members));
        self.depth -= 1;
        Ok(())
    }

    /// Parses a string; `self.pos` is at the opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        let b = self.b;
        let start = self.pos + 1;
        let mut i = start;
        while let Some(&c) = b.get(i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            i += 1;
        }
        if b.get(i) == Some(&b'"') {
            // No escapes: one validation and one copy.
            let raw = b.get(start..i).unwrap_or_default();
            let s = std::str::from_utf8(raw).map_err(|e| {
                Self::err_at(
                    ParseErrorKind::StringInvalidEncoding,
                    start + e.valid_up_to(),
                )
            })?;
            self.pos = i + 1;
            return Ok(s.to_owned());
        }
        let mut out: Vec<u8> = Vec::with_capacity(i - start + 16);
        let mut seg = start;
        loop {
            while let Some(&c) = b.get(i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                i += 1;
            }
            // Escapes and quotes are ASCII, so a valid UTF-8 sequence never spans two segments.
            let raw = b.get(seg..i).unwrap_or_default();
            if let Err(e) = std::str::from_utf8(raw) {
                let at = seg + e.valid_up_to();
                return Err(if e.error_len().is_none() && i >= b.len() {
                    Self::err_at(ParseErrorKind::StringMissQuotationMark, b.len())
                } else {
                    Self::err_at(ParseErrorKind::StringInvalidEncoding, at)
                });
            }
            out.extend_from_slice(raw);
            match b.get(i) {
                None | Some(0) => {
                    return Err(Self::err_at(ParseErrorKind::StringMissQuotationMark, i));
                }
                Some(b'"') => {
                    self.pos = i + 1;
                    break;
                }
                Some(b'\\') => {
                    i = self.escape(i, &mut out)?;
                    seg = i;
                }
                Some(_) => return Err(Self::err_at(ParseErrorKind::StringInvalidEncoding, i)),
            }
        }
        String::from_utf8(out)
            .map_err(|_| Self::err_at(ParseErrorKind::StringInvalidEncoding, start))
    }

    /// Decodes the escape starting at `esc` (a backslash) into `out`; returns the offset after it.
    fn escape(&self, esc: usize, out: &mut Vec<u8>) -> Result<usize, ParseError> {
        let b = self.b;
        let simple = match b.get(esc + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let hex = |at: usize| {
                    hex4(b.get(at..at + 4)).ok_or(Self::err_at(
                        ParseErrorKind::StringUnicodeEscapeInvalidHex,
                        esc,
                    ))
                };
                let surrogate = Self::err_at(ParseErrorKind::StringUnicodeSurrogateInvalid, esc);
                let hi = hex(esc + 2)?;
                let (cp, next) = match hi {
                    0xD800..=0xDBFF => {
                        if b.get(esc + 6) != Some(&b'\\') || b.get(esc + 7) != Some(&b'u') {
                            return Err(surrogate);
                        }
                        let lo = hex(esc + 8)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(surrogate);
                        }
                        (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), esc + 12)
                    }
                    0xDC00..=0xDFFF => return Err(surrogate),
                    _ => (hi, esc + 6),
                };
                let ch = char::from_u32(cp).ok_or(surrogate)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                return Ok(next);
            }
            _ => return Err(Self::err_at(ParseErrorKind::StringEscapeInvalid, esc)),
        };
        out.push(simple);
        Ok(esc + 2)
    }

    #[inline(always)]
    fn number(&mut self) -> Result<Number, ParseError> {
        let b = self.b;
        let start = self.pos;
        let mut i = start;
        let neg = b.get(i) == Some(&b'-');
        if neg {
            i += 1;
        }
        // Significant digits while they fit in a u64; `exact` turns false once they do not.
        let mut sig: u64 = 0;
        let mut exact = true;
        let mut push_digit = |sig: &mut u64, d: u8| match sig
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(d - b'0')))
        {
            Some(m) => *sig = m,
            None => exact = false,
        };
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = b.get(i) {
                    push_digit(&mut sig, d);
                    i += 1;
                }
            }
            Some(b'N') => {
                return self.token(i, b"NaN", f64::NAN);
            }
            Some(b'I') => {
                let inf = if neg {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
                if b.get(i + 3) == Some(&b'i') {
                    return self.token(i, b"Infinity", inf);
                }
                return self.token(i, b"Inf", inf);
            }
            _ => return Err(Self::err_at(ParseErrorKind::ValueInvalid, i)),
        }
        let mut integer = true;
        let mut frac_digits: i64 = 0;
        if b.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return Err(Self::err_at(ParseErrorKind::NumberMissFraction, i));
            }
            while let Some(&d @ b'0'..=b'9') = b.get(i) {
                push_digit(&mut sig, d);
                frac_digits += 1;
                i += 1;
            }
        }
        let mut exp: i64 = 0;
        if let Some(b'e' | b'E') = b.get(i) {
            integer = false;
            i += 1;
            let exp_neg = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return Err(Self::err_at(ParseErrorKind::NumberMissExponent, i));
            }
            while let Some(&d @ b'0'..=b'9') = b.get(i) {
                // Saturate far beyond any meaningful exponent; the slow path sees the real text.
                exp = (exp * 10 + i64::from(d - b'0')).min(1 << 40);
                i += 1;
            }
            if exp_neg {
                exp = -exp;
            }
        }
        self.pos = i;
        let text = b.get(start..i).unwrap_or_default();
        let too_big = Self::err_at(ParseErrorKind::NumberTooBig, start);
        if integer {
            if exact {
                if !neg {
                    return Ok(match i64::try_from(sig) {
                        Ok(v) => Number::Int(v),
                        Err(_) => Number::UInt(sig),
                    });
                }
                if sig <= 1 << 63 {
                    // 2^63 wraps to i64::MIN, which is what -2^63 is.
                    return Ok(Number::Int((sig as i64).wrapping_neg()));
                }
            }
            return Ok(Number::BigInt(slow_f64(text).ok_or(too_big)?));
        }
        if exact && sig > 1 << 53 && (-22..=22).contains(&(exp - frac_digits)) {
            return Ok(Number::Decimal(Decimal {
                sig,
                exp10: (exp - frac_digits) as i8,
                neg,
            }));
        }
        if exact && sig <= 1 << 53 {
            if let Some(v) = scale(sig, exp - frac_digits) {
                return Ok(Number::Float(if neg { -v } else { v }));
            }
        }
        Ok(Number::Float(slow_f64(text).ok_or(too_big)?))
    }

    /// Matches one of the `NaN` / `Inf` / `Infinity` tokens starting at `at`.
    fn token(&mut self, at: usize, word: &[u8], v: f64) -> Result<Number, ParseError> {
        for (k, &c) in word.iter().enumerate() {
            if self.b.get(at + k) != Some(&c) {
                return Err(Self::err_at(ParseErrorKind::ValueInvalid, at + k));
            }
        }
        self.pos = at + word.len();
        Ok(Number::Float(v))
    }
}

/// Correctly rounded text-to-f64 for the literals the fast path leaves; `None` when the value does
/// not fit in a double.
fn slow_f64(text: &[u8]) -> Option<f64> {
    let v: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits?;
    let mut v = 0u32;
    for &c in digits {
        v = v * 16 + char::from(c).to_digit(16)?;
    }
    Some(v)
}

// ------------------------------------------------------------------------------------------------
// Writing

/// Appends `v` as TF Serving writes a double: shortest round-trip text, `.0` on whole numbers,
/// bare `NaN` / `Infinity` / `-Infinity` when not finite.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let mut buf = ryu::Buffer::new();
        push_decimal(out, buf.format_finite(v));
    } else {
        write_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

/// Appends `v` like [`write_f64`], but as the shortest text that round-trips through `f32`.
pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let mut buf = ryu::Buffer::new();
        push_decimal(out, buf.format_finite(v));
    } else {
        write_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

/// Appends a half-precision value as the shortest decimal that reads back as the same `f16`.
pub fn write_f16(out: &mut Vec<u8>, v: half::f16) {
    write_short(out, v.to_f32(), 5, |x| half::f16::from_f32(x) == v);
}

/// Appends a bfloat16 value as the shortest decimal that reads back as the same `bf16`.
pub fn write_bf16(out: &mut Vec<u8>, v: half::bf16) {
    write_short(out, v.to_f32(), 4, |x| half::bf16::from_f32(x) == v);
}

/// Tries 1..=`max_digits` significant digits and writes the first rounding of `x` that `same`
/// accepts (`max_digits` always suffices for the 16-bit formats; `x` itself is the fallback).
fn write_short(out: &mut Vec<u8>, x: f32, max_digits: i32, same: impl Fn(f32) -> bool) {
    if x.is_finite() && x != 0.0 {
        let xd = f64::from(x);
        let e = xd.abs().log10().floor() as i32;
        for p in 1..=max_digits {
            let scale = 10f64.powi(p - 1 - e);
            let r = ((xd * scale).round() / scale) as f32;
            if same(r) {
                write_f32(out, r);
                return;
            }
        }
    }
    write_f32(out, x);
}

fn push_decimal(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    if !s.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
        out.extend_from_slice(b".0");
    }
}

fn write_non_finite(out: &mut Vec<u8>, nan: bool, negative: bool) {
    out.extend_from_slice(match (nan, negative) {
        (true, _) => b"NaN".as_slice(),
        (false, false) => b"Infinity",
        (false, true) => b"-Infinity",
    });
}

pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

/// Appends `s` as a quoted, escaped JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// Appends bytes as a JSON string; each invalid UTF-8 sequence becomes U+FFFD, because the output
/// must stay valid JSON (TF Serving writes the raw bytes).
pub fn write_bytes_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        escape_into(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
    out.push(b'"');
}

fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(bytes.get(run..i).unwrap_or_default());
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(bytes.get(run..).unwrap_or_default());
}

/// Appends a number as it was read (integers exactly; decimals like [`write_f64`]).
pub fn write_number(out: &mut Vec<u8>, n: Number) {
    match n {
        Number::Int(i) => write_i64(out, i),
        Number::UInt(u) => write_u64(out, u),
        Number::BigInt(f) | Number::Float(f) => write_f64(out, f),
        Number::Decimal(d) => write_f64(out, d.to_f64()),
    }
}

/// Appends `v` as compact JSON. Stops early, returning `false`, once `out` is longer than `limit`.
fn write_value_limited(out: &mut Vec<u8>, v: &Value, limit: usize) -> bool {
    if out.len() > limit {
        return false;
    }
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, *n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_value_limited(out, item, limit) {
                    return false;
                }
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                if !write_value_limited(out, item, limit) {
                    return false;
                }
            }
            out.push(b'}');
        }
    }
    out.len() <= limit
}

/// Appends `v` as compact JSON.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    write_value_limited(out, v, usize::MAX);
}

/// `v` re-serialised for an error message (the `<json>` of TF Serving's texts): compact, and cut
/// to [`MESSAGE_JSON_LIMIT`] bytes followed by `...` when longer.
pub fn message_json(v: &Value) -> String {
    let mut out = Vec::new();
    let complete = write_value_limited(&mut out, v, MESSAGE_JSON_LIMIT);
    let mut s = String::from_utf8_lossy(&out).into_owned();
    if !complete || s.len() > MESSAGE_JSON_LIMIT {
        let mut cut = MESSAGE_JSON_LIMIT.min(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

impl fmt::Display for Value {
    /// Compact JSON, in full.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        write_value(&mut out, self);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Value {
        match parse(s.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    fn perr(s: &[u8]) -> String {
        match parse(s) {
            Ok(v) => panic!("{:?} parsed as {v:?}", String::from_utf8_lossy(s)),
            Err(e) => e.to_string(),
        }
    }

    fn num(s: &str) -> Number {
        match p(s) {
            Value::Number(n) => n,
            v => panic!("{s}: not a number: {v:?}"),
        }
    }

    /// `as_f32` must be exactly what TF Serving computes: the standard library's correctly
    /// rounded `f64`, cast to `f32`; `as_f64` that `f64` itself.
    fn check_conversions(text: &str) {
        let n = num(text);
        let exact: f64 = text.parse().expect("a valid literal");
        assert_eq!(n.as_f64().to_bits(), exact.to_bits(), "{text} as f64");
        assert_eq!(
            n.as_f32().to_bits(),
            (exact as f32).to_bits(),
            "{text} as f32"
        );
    }

    #[test]
    fn long_decimals_convert_as_tf_serving_does() {
        // What clients print for float32 data: the shortest f64 text of each f32.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decimals = 0;
        for _ in 0..20_000 {
            let r = next();
            let x =
                f32::from_bits(((r >> 32) as u32 & 0x807F_FFFF) | (((r & 63) as u32 + 100) << 23));
            let text = format!("{}", f64::from(x));
            check_conversions(&text);
            decimals += usize::from(matches!(num(&text), Number::Decimal(_)));
            // The midpoint between x and the next f32 up, printed with 17 to 19 digits and nudged
            // by one unit in the last place: the cases where an approximation would round wrong.
            let up = f32::from_bits(x.to_bits() + 1);
            let mid = (f64::from(x) + f64::from(up)) / 2.0;
            for digits in [16, 17, 18] {
                let t = format!("{mid:.digits$e}");
                check_conversions(&t);
                let (mant, exp) = t.split_once('e').expect("scientific");
                let last = mant.len() - 1;
                for delta in [1i64, -1] {
                    let d = i64::from(mant.as_bytes()[last] - b'0') + delta;
                    if (0..=9).contains(&d) {
                        let nudged = format!("{}{}e{exp}", &mant[..last], d);
                        check_conversions(&nudged);
                    }
                }
            }
        }
        assert!(
            decimals > 4_000,
            "float32 texts take the deferred path ({decimals})"
        );
        for text in [
            "3.4028234663852886e38",
            "3.4028235677973366e38",
            "-3.4028235677973362e38",
            "1.1754943508222875e-38",
            "1.1754942807573643e-38",
            "1.4012984643248171e-45",
            "0.10000000149011612",
            "-0.30000001192092896",
            "9007199254740993.0",
            "18446744073709551615e-22",
            "12345678901234567890e-3",
            "0.50000000000000000",
            "1.0000000596046448",
            "1.0000000596046449",
            "1.0000000596046447",
        ] {
            check_conversions(text);
        }
    }

    fn out<F: FnOnce(&mut Vec<u8>)>(f: F) -> String {
        let mut o = Vec::new();
        f(&mut o);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn parses_scalars_and_containers() {
        assert_eq!(p("null"), Value::Null);
        assert_eq!(p(" \t\r\ntrue"), Value::Bool(true));
        assert_eq!(p("false"), Value::Bool(false));
        assert_eq!(p("\"hi\""), Value::String("hi".into()));
        assert_eq!(p("[]"), Value::Array(vec![]));
        assert_eq!(p("{}"), Value::Object(vec![]));
        assert_eq!(
            p(r#" { "a" : [ 1 , 2.5 , "x" , null ] , "b" : { } } "#),
            Value::Object(vec![
                (
                    "a".into(),
                    Value::Array(vec![
                        Value::Number(Number::Int(1)),
                        Value::Number(Number::Float(2.5)),
                        Value::String("x".into()),
                        Value::Null,
                    ])
                ),
                ("b".into(), Value::Object(vec![])),
            ])
        );
        assert_eq!(
            p("[[1,[2]],[]]").to_string(),
            "[[1,[2]],[]]",
            "nested arrays share the parser's stack correctly"
        );
    }

    #[test]
    fn integers_are_kept_apart_from_decimals() {
        assert_eq!(num("1"), Number::Int(1));
        assert_eq!(num("-0"), Number::Int(0));
        assert_eq!(num("1.0"), Number::Float(1.0));
        assert_eq!(num("1e2"), Number::Float(100.0));
        assert_eq!(num("1E+2"), Number::Float(100.0));
        assert_eq!(num("-2.5e-3"), Number::Float(-0.0025));
        assert_eq!(num("0.1"), Number::Float(0.1));
        assert_eq!(num("123456789.125"), Number::Float(123_456_789.125));
        assert!(matches!(num("0.30000000000000004"), Number::Decimal(_)));
        assert_eq!(num("0.30000000000000004").as_f64(), 0.1 + 0.2);
        assert_eq!(num("9007199254740993.0").as_f64(), 9007199254740992.0);
        assert_eq!(num("1e-400"), Number::Float(0.0));
        assert_eq!(
            num("2.2250738585072014e-308"),
            Number::Float(f64::MIN_POSITIVE)
        );
        assert_eq!(num("1.7976931348623157e308"), Number::Float(f64::MAX));
    }

    #[test]
    fn integers_are_exact_over_i64_and_u64() {
        assert_eq!(num("9223372036854775807"), Number::Int(i64::MAX));
        assert_eq!(num("-9223372036854775808"), Number::Int(i64::MIN));
        assert_eq!(num("9223372036854775808"), Number::UInt(1 << 63));
        assert_eq!(num("18446744073709551615"), Number::UInt(u64::MAX));
        assert_eq!(
            num("18446744073709551616"),
            Number::BigInt(18446744073709551616.0)
        );
        assert_eq!(
            num("-9223372036854775809"),
            Number::BigInt(-9223372036854775809.0)
        );
        assert_eq!(num("100000000000000000000000"), Number::BigInt(1e23));
    }

    #[test]
    fn accepts_nan_and_infinity_tokens() {
        for (s, want) in [
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
        ] {
            assert_eq!(num(s), Number::Float(want), "{s}");
        }
        assert!(matches!(num("NaN"), Number::Float(f) if f.is_nan()));
        assert!(matches!(num("-NaN"), Number::Float(f) if f.is_nan()));
        assert_eq!(
            p("[NaN,Inf,-Infinity]").to_string(),
            "[NaN,Infinity,-Infinity]"
        );
        assert_eq!(
            perr(b"Infinit"),
            "JSON Parse error: Invalid value. at offset: 7"
        );
        assert_eq!(
            perr(b"[Nan]"),
            "JSON Parse error: Invalid value. at offset: 3"
        );
        assert_eq!(
            perr(b"-Ix"),
            "JSON Parse error: Invalid value. at offset: 2"
        );
        assert_eq!(
            perr(b"nan"),
            "JSON Parse error: Invalid value. at offset: 1"
        );
    }

    #[test]
    fn error_texts_and_offsets_follow_rapidjson() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "JSON Parse error: The document is empty"),
            (
                b"  \n",
                "JSON Parse error: The document is empty. at offset: 3",
            ),
            (b"x", "JSON Parse error: Invalid value. at offset: 0"),
            (b"tru", "JSON Parse error: Invalid value. at offset: 3"),
            (b"[1,]", "JSON Parse error: Invalid value. at offset: 3"),
            (
                b"[1 2]",
                "JSON Parse error: Missing a comma or ']' after an array element. at offset: 3",
            ),
            (
                b"[1",
                "JSON Parse error: Missing a comma or ']' after an array element. at offset: 2",
            ),
            (
                b"{1:2}",
                "JSON Parse error: Missing a name for object member. at offset: 1",
            ),
            (
                b"{\"a\":1,}",
                "JSON Parse error: Missing a name for object member. at offset: 7",
            ),
            (
                b"{\"a\" 1}",
                "JSON Parse error: Missing a colon after a name of object member. at offset: 5",
            ),
            (
                b"{\"a\":1 \"b\"}",
                "JSON Parse error: Missing a comma or '}' after an object member. at offset: 7",
            ),
            (
                b"\"abc",
                "JSON Parse error: Missing a closing quotation mark in string. at offset: 4",
            ),
            (
                b"\"a\\qb\"",
                "JSON Parse error: Invalid escape character in string. at offset: 2",
            ),
            (
                b"\"ab\\u12G4\"",
                "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 3",
            ),
            (
                b"\"\\uD800\"",
                "JSON Parse error: The surrogate pair in string is invalid. at offset: 1",
            ),
            (
                b"\"\\uD800\\u0041\"",
                "JSON Parse error: The surrogate pair in string is invalid. at offset: 1",
            ),
            (
                b"\"\\uDC00\"",
                "JSON Parse error: The surrogate pair in string is invalid. at offset: 1",
            ),
            (
                b"\"a\nb\"",
                "JSON Parse error: Invalid encoding in string. at offset: 2",
            ),
            (
                b"\"a\xffb\"",
                "JSON Parse error: Invalid encoding in string. at offset: 2",
            ),
            (
                b"\"\\n\xc3\x28\"",
                "JSON Parse error: Invalid encoding in string. at offset: 3",
            ),
            (
                b"\"a\xc3",
                "JSON Parse error: Missing a closing quotation mark in string. at offset: 3",
            ),
            (
                b"1.",
                "JSON Parse error: Miss fraction part in number. at offset: 2",
            ),
            (
                b"[1.e5]",
                "JSON Parse error: Miss fraction part in number. at offset: 3",
            ),
            (
                b"1e",
                "JSON Parse error: Miss exponent in number. at offset: 2",
            ),
            (
                b"1e+x",
                "JSON Parse error: Miss exponent in number. at offset: 3",
            ),
            (b"-", "JSON Parse error: Invalid value. at offset: 1"),
            (
                b"[ 1e400 ]",
                "JSON Parse error: Number too big to be stored in double. at offset: 2",
            ),
            (
                b"-1e400",
                "JSON Parse error: Number too big to be stored in double. at offset: 0",
            ),
            (b".5", "JSON Parse error: Invalid value. at offset: 0"),
            (b"+1", "JSON Parse error: Invalid value. at offset: 0"),
            (
                b"\xef\xbb\xbf{}",
                "JSON Parse error: Invalid value. at offset: 0",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&perr(input), want, "{:?}", String::from_utf8_lossy(input));
        }
        let huge = format!("[{}]", "9".repeat(400));
        assert_eq!(
            perr(huge.as_bytes()),
            "JSON Parse error: Number too big to be stored in double. at offset: 1"
        );
        let e: aegis_core::Error = ParseError {
            kind: ParseErrorKind::ValueInvalid,
            offset: 4,
        }
        .into();
        assert_eq!(e.kind, aegis_core::ErrorKind::InvalidArgument);
        assert_eq!(e.message, "JSON Parse error: Invalid value. at offset: 4");
    }

    #[test]
    fn stops_after_the_first_value() {
        assert_eq!(p("{} trailing garbage ["), Value::Object(vec![]));
        assert_eq!(p("1x"), Value::Number(Number::Int(1)));
        assert_eq!(p("01"), Value::Number(Number::Int(0)));
        assert_eq!(p("[1]]"), Value::Array(vec![Value::Number(Number::Int(1))]));
    }

    #[test]
    fn duplicate_keys_keep_order_and_first_wins() {
        let v = p(r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(v.get("a"), Some(&Value::Number(Number::Int(1))));
        assert_eq!(v.get("c"), None);
        assert_eq!(v.to_string(), r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(Value::Null.get("a"), None);
    }

    #[test]
    fn string_escapes_and_unicode() {
        assert_eq!(
            p(r#""q\"b\\s\/b\bf\fn\nr\rt\t""#),
            Value::String("q\"b\\s/b\u{8}f\u{c}n\nr\rt\t".into())
        );
        assert_eq!(p(r#""\u00e9\u4e2D""#), Value::String("é中".into()));
        assert_eq!(p(r#""\ud83d\ude00!""#), Value::String("😀!".into()));
        assert_eq!(p(r#""\u0000""#), Value::String("\0".into()));
        assert_eq!(p("\"raw é 😀\""), Value::String("raw é 😀".into()));
        assert_eq!(
            p(r#"{"k\u00e9y":1}"#).get("kéy"),
            Some(&Value::Number(Number::Int(1)))
        );
    }

    #[test]
    fn b64_objects_are_recognised_exactly() {
        assert_eq!(p(r#"{"b64":"AAE="}"#).b64_payload(), Some("AAE="));
        assert_eq!(p(r#"{"b64":1}"#).b64_payload(), None);
        assert_eq!(p(r#"{"b64":"a","c":"d"}"#).b64_payload(), None);
        assert_eq!(p(r#"{"B64":"a"}"#).b64_payload(), None);
        assert_eq!(p(r#"["a"]"#).b64_payload(), None);
    }

    #[test]
    fn type_names_match_rapidjson() {
        let names: Vec<_> = [
            "null", "false", "true", "{}", "[]", "\"\"", "1", "1.5", "NaN",
        ]
        .iter()
        .map(|s| p(s).type_name())
        .collect();
        assert_eq!(
            names,
            ["Null", "False", "True", "Object", "Array", "String", "Number", "Number", "Number"]
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert_eq!(
            perr(deep.as_bytes()),
            format!(
                "JSON Parse error: {} at offset: 512",
                ParseErrorKind::TooDeep.message()
            )
        );
        let deep = "{\"a\":".repeat(100_000);
        assert!(perr(deep.as_bytes()).contains("Nesting too deep"));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let over = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(over.as_bytes()).is_err());
    }

    #[test]
    fn writes_floats_like_tf_serving() {
        assert_eq!(out(|o| write_f64(o, 3.0)), "3.0");
        assert_eq!(out(|o| write_f64(o, 2.5)), "2.5");
        assert_eq!(out(|o| write_f64(o, -0.0)), "-0.0");
        assert_eq!(out(|o| write_f64(o, 0.1)), "0.1");
        assert_eq!(out(|o| write_f64(o, 1e300)), "1e300");
        assert_eq!(out(|o| write_f64(o, 1e-7)), "1e-7");
        assert_eq!(out(|o| write_f64(o, f64::NAN)), "NaN");
        assert_eq!(out(|o| write_f64(o, f64::INFINITY)), "Infinity");
        assert_eq!(out(|o| write_f64(o, f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(out(|o| write_f32(o, 0.1)), "0.1");
        assert_eq!(out(|o| write_f32(o, 16777216.0)), "16777216.0");
        assert_eq!(out(|o| write_f32(o, f32::MAX)), "3.4028235e38");
        assert_eq!(out(|o| write_f32(o, -f32::INFINITY)), "-Infinity");
        assert_eq!(out(|o| write_f32(o, f32::NAN)), "NaN");
        // Every written float reads back as the same value.
        for v in [0.1f32, 1.0 / 3.0, 1e-45, 123456.79, -7.5e20] {
            let s = out(|o| write_f32(o, v));
            assert_eq!(s.parse::<f32>().unwrap(), v, "{s}");
        }
    }

    #[test]
    fn writes_half_floats_shortest() {
        use half::{bf16, f16};
        assert_eq!(out(|o| write_f16(o, f16::from_f32(0.1))), "0.1");
        assert_eq!(out(|o| write_f16(o, f16::from_f32(2.0))), "2.0");
        assert_eq!(out(|o| write_f16(o, f16::MAX)), "65500.0");
        assert_eq!(out(|o| write_f16(o, f16::NAN)), "NaN");
        assert_eq!(out(|o| write_f16(o, f16::NEG_INFINITY)), "-Infinity");
        assert_eq!(out(|o| write_bf16(o, bf16::from_f32(0.1))), "0.1");
        assert_eq!(out(|o| write_bf16(o, bf16::from_f32(-3.0))), "-3.0");
        // Every f16 and bf16 bit pattern reads back as itself.
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let s = out(|o| write_f16(o, h));
            if h.is_nan() {
                assert_eq!(s, "NaN");
            } else if h.is_finite() {
                let back = f16::from_f32(s.parse::<f32>().unwrap());
                assert_eq!(back.to_bits(), bits, "{s}");
                assert!(s.len() <= 12, "{s}");
            }
            let b = bf16::from_bits(bits);
            let s = out(|o| write_bf16(o, b));
            if b.is_finite() {
                let back = bf16::from_f32(s.parse::<f32>().unwrap());
                assert_eq!(back.to_bits(), bits, "{s}");
            }
        }
    }

    #[test]
    fn writes_integers() {
        assert_eq!(out(|o| write_i64(o, i64::MIN)), "-9223372036854775808");
        assert_eq!(out(|o| write_i64(o, i64::MAX)), "9223372036854775807");
        assert_eq!(out(|o| write_i64(o, 0)), "0");
        assert_eq!(out(|o| write_u64(o, u64::MAX)), "18446744073709551615");
    }

    #[test]
    fn writes_strings_escaped_and_lossy() {
        assert_eq!(
            out(|o| write_str(o, "a\"b\\c\n\u{1}\u{1f}é/")),
            r#""a\"b\\c\n\u0001\u001fé/""#
        );
        assert_eq!(
            out(|o| write_bytes_lossy(o, b"ok\xff\xfe!")),
            "\"ok\u{FFFD}\u{FFFD}!\""
        );
        assert_eq!(out(|o| write_bytes_lossy(o, b"\xe2\x82")), "\"\u{FFFD}\"");
        assert_eq!(out(|o| write_bytes_lossy(o, "é\t".as_bytes())), "\"é\\t\"");
        // What the writer escapes, the parser reads back.
        let nasty: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let text = out(|o| write_str(o, &nasty));
        assert_eq!(p(&text), Value::String(nasty));
    }

    #[test]
    fn round_trips_documents() {
        let doc = r#"{"a":[1,-2,18446744073709551615,-9223372036854775808,2.5,NaN,-Infinity],"s":"x\"y","n":null,"t":true,"o":{"b64":"AA=="}}"#;
        assert_eq!(p(doc).to_string(), doc);
    }

    #[test]
    fn message_json_is_compact_and_truncated() {
        assert_eq!(message_json(&p(r#"{ "a" : [ 1 , 2 ] }"#)), r#"{"a":[1,2]}"#);
        let long = format!("[{}1]", "1,".repeat(1000));
        let m = message_json(&p(&long));
        assert_eq!(m.len(), MESSAGE_JSON_LIMIT + 3);
        assert!(m.starts_with("[1,1,") && m.ends_with("..."));
        let wide = format!("\"{}\"", "é".repeat(300));
        let m = message_json(&p(&wide));
        assert!(m.ends_with("...") && m.len() <= MESSAGE_JSON_LIMIT + 3);
    }

    /// Tiny xorshift PRNG so the fuzz loops need no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn decimal_fast_path_matches_std() {
        let mut rng = Rng(7);
        for _ in 0..100_000 {
            let digits = 1 + rng.below(22);
            let mant: String = (0..digits)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            let (int, frac) = mant.split_at(rng.below(digits + 1));
            let int = int.trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let frac = if frac.is_empty() { "0" } else { frac };
            let sign = if rng.below(2) == 0 { "-" } else { "" };
            let text = match rng.below(3) {
                0 => format!("{sign}{int}.{frac}"),
                1 => format!("{sign}{int}.{frac}e{}", rng.below(70) as i64 - 35),
                _ => format!("{sign}{int}E+{}", rng.below(30)),
            };
            let want: f64 = text.parse().unwrap();
            match num(&text) {
                n @ (Number::Float(_) | Number::Decimal(_)) => {
                    assert_eq!(n.as_f64().to_bits(), want.to_bits(), "{text}");
                    assert_eq!(n.as_f32().to_bits(), (want as f32).to_bits(), "{text}");
                }
                n => panic!("{text}: {n:?}"),
            }
        }
    }

    #[test]
    fn fuzz_random_and_mutated_inputs_never_panic() {
        let seeds: &[&[u8]] = &[
            br#"{"instances": [[1.0, 2, -3e5], [NaN, -Infinity, 0.5]], "signature_name": "s"}"#,
            br#"{"inputs": {"a": [{"b64": "AAEC"}], "b": ["x\u00e9\ud83d\ude00\n"]}}"#,
            br#"[true, false, null, 18446744073709551616, -9223372036854775808, "\\"]"#,
        ];
        let alphabet = b"[]{}\",:.-+eE0123456789 \\u\"tfnNaIy\x00\xff\xc3";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 4 == 0 {
                (0..rng.below(64))
                    .map(|_| {
                        if rng.below(2) == 0 {
                            alphabet[rng.below(alphabet.len())]
                        } else {
                            rng.next() as u8
                        }
                    })
                    .collect()
            } else {
                let mut v = seeds[rng.below(seeds.len())].to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(v.len());
                    match rng.below(3) {
                        0 => v[at] = alphabet[rng.below(alphabet.len())],
                        1 => {
                            v.insert(at, alphabet[rng.below(alphabet.len())]);
                        }
                        _ => {
                            v.remove(at);
                        }
                    }
                }
                v
            };
            if let Ok(v) = parse(&input) {
                // Whatever parses re-serialises into something that parses to the same text.
                let text = v.to_string();
                let again = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(again.to_string(), text);
                let _ = message_json(&v);
            }
        }
    }
}
