//! How keys and values look on the command line: UTF-8 text, or hex with
//! `--hex` for binary data.

use super::error::CliError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Text,
    Hex,
}

impl Encoding {
    pub fn from_hex_flag(hex: bool) -> Encoding {
        if hex { Encoding::Hex } else { Encoding::Text }
    }

    /// The bytes an argument stands for; `what` names it in the error.
    pub fn parse(self, what: &str, s: &str) -> Result<Vec<u8>, CliError> {
        match self {
            Encoding::Text => Ok(s.as_bytes().to_vec()),
            Encoding::Hex => from_hex(s).ok_or_else(|| {
                CliError::usage(format!(
                    "{what} {s:?} is not hex (with --hex, write bytes as pairs of 0-9a-f, e.g. 6b6579)"
                ))
            }),
        }
    }

    /// Bytes for display: hex, or text with any byte that is not UTF-8
    /// escaped as `\xNN` (use --hex for the exact bytes).
    pub fn show(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => to_hex(bytes),
            Encoding::Text => {
                let mut out = String::with_capacity(bytes.len());
                for chunk in bytes.utf8_chunks() {
                    out.push_str(chunk.valid());
                    for b in chunk.invalid() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                out
            }
        }
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let e = Encoding::Hex;
        assert_eq!(e.parse("key", "00ff6b").unwrap(), vec![0, 255, b'k']);
        assert_eq!(e.parse("key", "0x00").unwrap(), vec![0]);
        assert_eq!(e.show(&[0, 255, b'k']), "00ff6b");
        for bad in ["abc", "zz", "é0"] {
            let err = e.parse("key", bad).unwrap_err();
            assert!(err.message.contains("is not hex"), "{err}");
        }
    }

    #[test]
    fn text_escapes_what_is_not_utf8() {
        let e = Encoding::Text;
        assert_eq!(e.parse("key", "héllo").unwrap(), "héllo".as_bytes());
        assert_eq!(e.show("héllo".as_bytes()), "héllo");
        assert_eq!(e.show(&[b'a', 0xff, b'b']), "a\\xffb");
    }
}
