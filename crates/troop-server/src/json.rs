//! JSON the way upstream Troop writes and converts it.
//!
//! Upstream serialises with Python's `json.dumps` defaults (`", "` and `": "` separators,
//! non-ASCII as lowercase `\uXXXX`, surrogate pairs outside the BMP), so everything the server
//! sends is ASCII. Fields are converted with Python's `int()` / `str()` as they are parsed;
//! [`py_int`] and [`py_str`] do the same for the values a real client can send and refuse the
//! rest (lists, objects, values out of range) instead of guessing.

use serde_json::Value;
use std::fmt::Write;

/// Appends `s` as a JSON string literal, escaped like `json.dumps(s)`.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // Python's ensure_ascii escapes everything outside printable ASCII, DEL included.
            c if !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends any JSON value like `json.dumps(value)` (object keys in their original order).
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else if let Some(f) = n.as_f64() {
                out.push_str(&py_float(f));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (k, (key, item)) in map.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(float)`, close enough for the values JSON can carry.
fn py_float(f: f64) -> String {
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Python's `int(value)` for what JSON can carry; `None` where Python would raise or the
/// result does not fit an `i64`.
pub fn py_int(v: &Value) -> Option<i64> {
    match v {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.is_finite() && f.abs() < 9.2e18).then(|| f.trunc() as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// Python's `str(value)` for scalars; `None` for lists and objects (refused, not guessed).
pub fn py_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some("None".into()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => py_float(f),
            _ => return None,
        }),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(v: &Value) -> String {
        let mut s = String::new();
        write_value(&mut s, v);
        s
    }

    #[test]
    fn strings_escape_like_python() {
        let v = Value::String("a\"\\\n\t\u{1}é😀/\u{7f}".into());
        // python3 -c 'import json; print(json.dumps("a\"\\\n\t\x01é😀/\x7f"))'
        assert_eq!(dumps(&v), "\"a\\\"\\\\\\n\\t\\u0001\\u00e9\\ud83d\\ude00/\\u007f\"");
    }

    #[test]
    fn del_and_c1_controls_are_escaped() {
        let mut s = String::new();
        write_str(&mut s, "~\u{7f}\u{80}\u{9f}\u{a0}\u{2028}\u{ffff}\u{10ffff}\r\u{8}\u{c}\u{1f} <>");
        assert_eq!(s, r#""~\u007f\u0080\u009f\u00a0\u2028\uffff\udbff\udfff\r\b\f\u001f <>""#);
    }

    proptest::proptest! {
        #[test]
        fn any_string_encodes_to_ascii_and_round_trips(s in proptest::prelude::any::<String>()) {
            let mut out = String::new();
            write_str(&mut out, &s);
            proptest::prop_assert!(out.is_ascii(), "not ASCII: {:?}", out);
            proptest::prop_assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f), "raw control byte: {:?}", out);
            let back: String = serde_json::from_str(&out).map_err(|e| {
                proptest::test_runner::TestCaseError::fail(format!("{e}: {out:?}"))
            })?;
            proptest::prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn containers_use_python_separators_and_keep_key_order() {
        let v: Value = serde_json::from_str(r#"{"1": [1,2], "0": {"a":null}}"#).unwrap();
        assert_eq!(dumps(&v), r#"{"1": [1, 2], "0": {"a": null}}"#);
    }

    #[test]
    fn conversions_follow_python() {
        assert_eq!(py_int(&Value::from(" 12 ")), Some(12));
        assert_eq!(py_int(&Value::from(3.9)), Some(3));
        assert_eq!(py_int(&Value::from(true)), Some(1));
        assert_eq!(py_int(&Value::from("x")), None);
        assert_eq!(py_int(&Value::Null), None);
        assert_eq!(py_str(&Value::from(5)), Some("5".into()));
        assert_eq!(py_str(&Value::from(1.0)), Some("1.0".into()));
        assert_eq!(py_str(&Value::from(1e20)), Some("1e+20".into()));
        assert_eq!(py_str(&serde_json::json!([1])), None);
    }
}
