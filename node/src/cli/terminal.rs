//! Drawing in place on a terminal (plain ANSI escapes) and reading single
//! keys without waiting for Enter.

use std::io::{IsTerminal, Write};

/// A region at the bottom of the terminal that is redrawn in place.
pub struct Screen {
    drawn: usize,
}

impl Screen {
    pub fn new() -> Screen {
        // Hide the cursor while the view redraws.
        print!("\x1b[?25l");
        let _ = std::io::stdout().flush();
        Screen { drawn: 0 }
    }

    /// Replaces what was drawn last with `lines`, each cut to the
    /// terminal's width so that no line wraps and the next redraw lands.
    pub fn draw(&mut self, lines: &[String]) {
        let width = width().unwrap_or(200);
        let mut buf = String::new();
        if self.drawn > 0 {
            buf.push_str(&format!("\x1b[{}A", self.drawn));
        }
        buf.push_str("\r\x1b[J");
        for l in lines {
            buf.push_str(&truncate_visible(l, width.saturating_sub(1)));
            buf.push('\n');
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(buf.as_bytes());
        let _ = out.flush();
        self.drawn = lines.len();
    }

    /// Leaves what was drawn on screen and moves on below it.
    pub fn finish(&mut self) {
        print!("\x1b[?25h");
        let _ = std::io::stdout().flush();
        self.drawn = 0;
    }
}

impl Default for Screen {
    fn default() -> Self {
        Screen::new()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h");
        let _ = std::io::stdout().flush();
    }
}

/// The terminal's width in columns.
pub fn width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize we own; no other memory is touched.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            Some(usize::from(ws.ws_col))
        } else {
            None
        }
    }
}

/// Cuts `line` to `width` visible characters; escape sequences are kept
/// (and cost nothing), and colours are reset at the end.
pub fn truncate_visible(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut visible = 0;
    let mut chars = line.chars();
    let mut cut = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for c in chars.by_ref() {
                out.push(c);
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if visible == width {
            cut = true;
            continue;
        }
        out.push(c);
        visible += 1;
    }
    if cut && line.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

/// The terminal in "one key at a time" mode (no line buffering, no echo;
/// Ctrl-C still sends SIGINT), restored when dropped.
pub struct KeyMode {
    saved: libc::termios,
}

impl KeyMode {
    /// `None` when standard input is not a terminal.
    pub fn enable() -> Option<KeyMode> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(KeyMode { saved })
        }
    }
}

impl Drop for KeyMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

/// Sends each byte typed on standard input to `tx`, from a thread of its
/// own (blocking reads); the thread ends with the process.
pub fn spawn_key_reader(tx: tokio::sync::mpsc::UnboundedSender<u8>) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut b = [0u8; 1];
        while let Ok(1) = stdin.read(&mut b) {
            if tx.send(b[0]).is_err() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_without_breaking_colours() {
        assert_eq!(truncate_visible("abcdef", 4), "abcd");
        assert_eq!(truncate_visible("ab", 4), "ab");
        assert_eq!(
            truncate_visible("\x1b[1;32mabcdef\x1b[0m", 3),
            "\x1b[1;32mabc\x1b[0m\x1b[0m"
        );
    }
}
