//! Reading a member's `/metrics`: fetched with a plain HTTP/1.1 GET and
//! parsed strictly enough that a malformed exposition fails the test.

use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Series name with its labels (`name{a="b"}`) → value.
pub type Samples = BTreeMap<String, f64>;

pub fn fetch(addr: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "status line: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_string())
}

/// Parses the text exposition format: `# HELP`/`# TYPE`/`# UNIT`/`# EOF`
/// comments and `name{labels} value` samples.
pub fn parse(text: &str) -> Result<Samples, String> {
    let mut out = Samples::new();
    let mut saw_eof = false;
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if rest == "EOF" {
                saw_eof = true;
                continue;
            }
            if !(rest.starts_with("HELP ")
                || rest.starts_with("TYPE ")
                || rest.starts_with("UNIT "))
            {
                return Err(format!("line {}: unknown comment {line:?}", n + 1));
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {}: no value in {line:?}", n + 1))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("line {}: bad metric name {name:?}", n + 1));
        }
        if name_end < series.len() && !series.ends_with('}') {
            return Err(format!("line {}: unterminated labels in {line:?}", n + 1));
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("line {}: bad value {value:?}", n + 1))?,
        };
        out.insert(series.to_string(), v);
    }
    if !saw_eof {
        return Err("no # EOF at the end".into());
    }
    Ok(out)
}
