//! How hub.yaml writes the values whose Rust types serde does not read as written: a port
//! range (`57991-58000`, or one port), trusted networks (a bare address is one host, a single
//! string is a one-item list), Docker memory sizes (`64m`) and CPUs (`0.5` as nano-CPUs).
//! Durations use humantime-serde and networks ipnet's own serde; only these forms are ours.

use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// A scalar written as text or as a whole number (`57991-58000` or `58000`, `64m` or `67108864`).
enum TextOrInt {
    Text(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for TextOrInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TextOrInt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("text or a whole number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TextOrInt, E> {
                Ok(TextOrInt::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TextOrInt, E> {
                i64::try_from(v).map(TextOrInt::Int).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextOrInt, E> {
                Ok(TextOrInt::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ports`: `FIRST-LAST`, or one port; written back as `FIRST-LAST`.
pub mod port_range {
    use super::*;

    pub fn serialize<S: Serializer>(ports: &(u16, u16), s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}-{}", ports.0, ports.1))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(u16, u16), D::Error> {
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|_| de::Error::custom(format!("`{s}` is not a port; write a range like 57991-58000")))
        };
        match TextOrInt::deserialize(d)? {
            TextOrInt::Int(n) => port(&n.to_string()).map(|p| (p, p)),
            TextOrInt::Text(s) => match s.split_once('-') {
                Some((first, last)) => Ok((port(first)?, port(last)?)),
                None => port(&s).map(|p| (p, p)),
            },
        }
    }
}

/// `trusted_networks`: a list of CIDRs (or one); a bare address is the network of that one
/// host (/32 or /128); `null` is an empty list. Written back with ipnet's own serde.
pub fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of networks like [10.0.0.0/8]")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                all.push(s);
            }
            Ok(all)
        }
    }
    let parse = |s: &str| {
        let s = s.trim();
        s.parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
            .ok_or_else(|| de::Error::custom(format!("`{s}` is not a CIDR like 10.0.0.0/8")))
    };
    d.deserialize_any(V)?.iter().map(|s| parse(s)).collect()
}

/// `limits.memory`: Docker's sizes, where k, m and g are powers of 1024 like `docker run
/// --memory 64m` (plain numbers are bytes). Hand-written: size crates such as bytesize read
/// `m`/`MB` as powers of 1000, and Docker's convention is these few lines.
pub mod memory {
    use super::*;

    const UNITS: [(char, u32); 3] = [('g', 30), ('m', 20), ('k', 10)];

    pub fn serialize<S: Serializer>(bytes: &i64, s: S) -> Result<S::Ok, S::Error> {
        match UNITS.iter().find(|(_, shift)| *bytes != 0 && bytes % (1i64 << shift) == 0) {
            Some((unit, shift)) => s.collect_str(&format_args!("{}{unit}", bytes >> shift)),
            None => s.serialize_i64(*bytes),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match TextOrInt::deserialize(d)? {
            TextOrInt::Int(n) => Ok(n),
            TextOrInt::Text(t) => {
                parse(&t).ok_or_else(|| de::Error::custom(format!("`{t}` is not a size like 64m, 1g or 512k")))
            }
        }
    }

    /// `64m`, `1g`, `512k`, `64mb`, or plain bytes.
    pub(crate) fn parse(s: &str) -> Option<i64> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_suffix('b').unwrap_or(&s);
        let (num, shift) = match UNITS.iter().find(|(unit, _)| s.ends_with(*unit)) {
            Some((unit, shift)) => (&s[..s.len() - unit.len_utf8()], *shift),
            None => (s, 0),
        };
        num.trim().parse::<i64>().ok()?.checked_mul(1 << shift)
    }
}

/// `limits.cpus`: a number of CPUs (`0.5`), held as Docker's nano-CPUs.
pub mod cpus {
    use super::*;

    pub fn serialize<S: Serializer>(nano_cpus: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*nano_cpus as f64 / 1e9)
    }

    /// NaN and values that round to 0 nano-CPUs become 0, which validation refuses.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let cpus = f64::deserialize(d)?;
        Ok((cpus * 1e9).round() as i64)
    }
}

/// `archive`: a mapping of its settings (missing ones take their defaults), or `off`
/// (also `false` or `null`) for no archive. Written back as the mapping, or `off`.
pub mod archive {
    use super::super::ArchiveSpec;
    use super::*;
    use serde::Serialize;

    pub fn serialize<S: Serializer>(spec: &Option<ArchiveSpec>, s: S) -> Result<S::Ok, S::Error> {
        match spec {
            Some(spec) => spec.serialize(s),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ArchiveSpec>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Off(OffWord),
            On(ArchiveSpec),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OffWord {
            Word(String),
            Flag(bool),
            Null(()),
        }
        match Form::deserialize(d) {
            Ok(Form::On(spec)) => Ok(Some(spec)),
            Ok(Form::Off(OffWord::Word(w))) if w == "off" => Ok(None),
            Ok(Form::Off(OffWord::Flag(false) | OffWord::Null(()))) => Ok(None),
            Ok(Form::Off(OffWord::Flag(true))) => Ok(Some(ArchiveSpec::default())),
            _ => Err(de::Error::custom(
                "write `off`, or a mapping like {path: data/archive.db, keep: 30d, max_session_bytes: 16m, max_total_bytes: 1g}",
            )),
        }
    }
}

/// A switch written `on` or `off` (also `true` / `false`); written back as `on` / `off`.
pub mod on_off {
    use super::*;

    pub fn serialize<S: Serializer>(on: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *on { "on" } else { "off" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Word(String),
            Flag(bool),
        }
        match Form::deserialize(d) {
            Ok(Form::Flag(on)) => Ok(on),
            Ok(Form::Word(w)) if w == "on" => Ok(true),
            Ok(Form::Word(w)) if w == "off" => Ok(false),
            _ => Err(de::Error::custom("write `on` or `off`")),
        }
    }
}
