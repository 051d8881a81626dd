//! Tables for people, JSON for scripts.

use serde_json::Value;

/// A table with a header row; columns are as wide as their widest cell.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, without trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|r| {
                let mut line = String::new();
                for (i, c) in r.iter().enumerate() {
                    if i > 0 {
                        line.push_str("  ");
                    }
                    line.push_str(c);
                    let pad = widths[i].saturating_sub(c.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    pub fn render(&self) -> String {
        let mut s = self.lines().join("\n");
        s.push('\n');
        s
    }
}

/// Prints a JSON value on one line (scripts read it with jq).
pub fn print_json(v: &Value) {
    outln!("{v}");
}

/// Writes to stdout. When stdout is closed (`raftctl scan | head` after
/// head exits) the program ends quietly, as Unix tools do. This replaces
/// restoring the default SIGPIPE disposition, which also killed raftctl
/// without a word when a server closed a *socket* under it (a TLS 1.3
/// server refusing a missing client certificate after the handshake).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("raftctl: cannot write the output: {e}");
        std::process::exit(i32::from(super::error::EXIT_ERROR));
    }
}

/// `print!` through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` through [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in microseconds as milliseconds with sensible precision.
pub fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(["ID", "NAME", "ROLE"]);
        t.row(["1", "dev-0", "leader"]);
        t.row(["12", "dev-11", ""]);
        assert_eq!(
            t.render(),
            "ID  NAME    ROLE\n1   dev-0   leader\n12  dev-11\n"
        );
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(ms(830), "0.83 ms");
        assert_eq!(ms(12_340), "12.3 ms");
        assert_eq!(ms(612_000), "612 ms");
    }
}
