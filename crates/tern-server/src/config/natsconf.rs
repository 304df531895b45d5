//! Parser for the nats-server configuration file format (`nats-server.conf`).
//!
//! The format, implemented by nats-server's `conf` package and described at
//! docs.nats.io under "Configuration File Format", is a relaxed superset of
//! JSON:
//!
//! * Entries are `key: value`, `key = value` or `key value`; a map value may
//!   follow its key directly (`cluster { ... }`). Entries are separated by
//!   newlines, `,` or `;`. Keys are bare words or quoted with `"` or `'`.
//!   The whole document may also be wrapped in `{ ... }`, as JSON is.
//! * Comments start with `#` or `//` and run to the end of the line. Inside a
//!   bare value they only start after whitespace, so `abc#def` and
//!   `nats://host//x` stay intact.
//! * Values are maps `{}`, arrays `[]` (elements separated by `,` or newlines),
//!   double-quoted strings with escapes (`\t \n \r \" \\ \/ \b \f \xHH \uXXXX`),
//!   raw single-quoted strings, multi-line block strings (`(` at the end of a
//!   line, closed by a line holding only `)`), and bare words that run to the
//!   end of the line or to `,` `;` `}` `]` or a comment.
//! * A bare word is a boolean if it is `true`/`yes`/`on` or `false`/`no`/`off`
//!   (any case), an integer if it is digits with an optional `-` and an
//!   optional size suffix, a float if it is a decimal with a `.` or exponent,
//!   a variable reference if it starts with `$`, and a string otherwise.
//!   Size suffixes follow nats-server: `k`=1000, `kb`/`ki`/`kib`=1024, and the
//!   same pattern for `m`, `g`, `t`, `p`, `e` (case-insensitive). Because of
//!   that, a bare `2m` is the integer 2000000, exactly as in nats-server, while
//!   `10s`, `500ms` or `1h30m` are strings; [`parse_duration`] reads them.
//! * Every entry is also a variable: `$NAME` as a bare value is replaced by the
//!   value of `NAME` from the innermost enclosing block that defines it, then
//!   from the environment (whose text is parsed as a value, so `PORT=4222` is
//!   an integer). References are whole values, never interpolated in strings.
//!   Bcrypt hashes such as `$2a$11$...` are kept as strings.
//! * `include path` splices another file's entries into the current block;
//!   relative paths resolve against the including file's directory. Included
//!   files start with a fresh variable scope, as in nats-server.
//! * A duplicate key replaces the earlier value.
//!
//! Deliberate differences from nats-server: a bare value may contain inner
//! spaces (nats-server rejects `key: a b`), backslashes in bare values are kept
//! literally, `null` is the string `"null"` as in nats-server, and ISO 8601
//! datetimes are kept as strings since [`config::Value`] has no time type.
//!
//! [`parse_str`] and [`parse_file`] return a [`config::Map`]; [`NatsConfFormat`]
//! plugs the parser into the `config` crate.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Map, Value, ValueKind};

/// Names of the entries referred to as `$variables`.
pub type VariableNames = std::collections::BTreeSet<String>;

/// Bounds `include` chains so a runaway chain fails with a clear error.
const MAX_INCLUDE_DEPTH: usize = 10;
/// Bounds `{`/`[` nesting so hostile input cannot overflow the stack.
const MAX_NESTING: usize = 64;
/// Bounds environment variables whose values refer to further variables.
const MAX_ENV_DEPTH: usize = 8;
/// Bounds the values that variable references copy, so that references to
/// references (`B: [$A, $A]`, `C: [$B, $B]`, ...) cannot grow exponentially.
const MAX_EXPANDED_VALUES: usize = 1_000_000;
/// Labels errors in text that has no file of its own.
const STRING_LABEL: &str = "<string>";

/// An error from parsing a configuration, a duration or a size.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsConfError {
    /// The text is malformed or refers to something that does not exist.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The file the error is in, or `<string>` for text without a file.
        file: String,
        /// The 1-based line of the error.
        line: usize,
        /// The 1-based column (in characters) of the error.
        column: usize,
        /// What went wrong.
        message: String,
    },
    /// The configuration file given to [`parse_file`] could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// [`parse_duration`] was given something that is not a Go duration.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The rejected text.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// [`parse_size`] was given something that is not a size.
    #[error("invalid size {input:?}: {reason}")]
    InvalidSize {
        /// The rejected text.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// Parses configuration text into a map of top-level keys.
///
/// `origin` is the file the text came from: its directory resolves relative
/// `include` paths and its name labels errors and values. If `origin` is an
/// existing directory, includes resolve against it directly. Without an
/// origin, includes resolve against the current directory.
///
/// # Errors
///
/// Returns [`NatsConfError::Parse`] for malformed text, undefined variables,
/// unreadable or cyclic includes, and numbers out of the 64-bit range.
pub fn parse_str(text: &str, origin: Option<&Path>) -> Result<Map<String, Value>, NatsConfError> {
    parse_str_with_variables(text, origin).map(|(map, _)| map)
}

/// Like [`parse_str`], and also returns the names of the entries the text
/// refers to as variables (`$NAME`). nats-server does not call such an entry
/// an unknown configuration key, so the caller can do the same.
///
/// # Errors
///
/// As [`parse_str`].
pub fn parse_str_with_variables(
    text: &str,
    origin: Option<&Path>,
) -> Result<(Map<String, Value>, VariableNames), NatsConfError> {
    let mut parser = Parser::new(text);
    match origin {
        Some(dir) if dir.is_dir() => parser.base_dir = dir.to_path_buf(),
        Some(file) => {
            let label = file.display().to_string();
            parser.origin = Some(label.clone());
            parser.label = label;
            parser.base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            // Recording the root file lets a file that includes itself be
            // reported as a cycle rather than as too deep.
            if let Ok(canonical) = fs::canonicalize(file) {
                parser.include_chain.push(canonical);
            }
        }
        None => {}
    }
    parser
        .parse_document_counting()
        .map(|(map, _, used)| (map, used))
}

/// Reads and parses a configuration file; see [`parse_str`].
///
/// # Errors
///
/// Returns [`NatsConfError::Io`] if the file cannot be read or is not UTF-8,
/// and any error of [`parse_str`].
pub fn parse_file(path: &Path) -> Result<Map<String, Value>, NatsConfError> {
    parse_file_with_variables(path).map(|(map, _)| map)
}

/// Like [`parse_file`], and also returns the names used as variables; see
/// [`parse_str_with_variables`].
///
/// # Errors
///
/// As [`parse_file`].
pub fn parse_file_with_variables(
    path: &Path,
) -> Result<(Map<String, Value>, VariableNames), NatsConfError> {
    let io_error = |source| NatsConfError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = fs::read(path).map_err(io_error)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        io_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "file is not valid utf-8",
        ))
    })?;
    parse_str_with_variables(&text, Some(path))
}

/// Parses a Go duration such as `300ms`, `1.5h` or `2h45m`, as Go's
/// `time.ParseDuration` does (units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
///
/// # Errors
///
/// Returns [`NatsConfError::InvalidDuration`] for malformed text, for negative
/// durations (which [`Duration`] cannot hold) and for durations above Go's
/// limit of `i64::MAX` nanoseconds.
pub fn parse_duration(s: &str) -> Result<Duration, NatsConfError> {
    let invalid = |reason| NatsConfError::InvalidDuration {
        input: s.to_string(),
        reason,
    };
    let overflow = || invalid("duration is too large");
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid("expected a number and a unit"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int_digits, after_int) = split_digits(rest);
        rest = after_int;
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let (digits, after_frac) = split_digits(after_dot);
            frac_digits = digits;
            rest = after_frac;
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid("expected a number"));
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, after_unit) = rest.split_at(unit_len);
        rest = after_unit;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(invalid("missing unit")),
            _ => return Err(invalid("unknown unit")),
        };
        // Any integer part longer than this already exceeds Go's limit.
        if int_digits.len() > 20 {
            return Err(overflow());
        }
        let int_value: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| overflow())?
        };
        let mut nanos = int_value.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Digits past the 20th cannot change the result by a nanosecond,
        // and dropping them keeps the arithmetic within u128.
        let frac = frac_digits.get(..20).unwrap_or(frac_digits);
        if !frac.is_empty() {
            let numerator: u128 = frac.parse().map_err(|_| overflow())?;
            let scale = (0..frac.len()).fold(1u128, |acc, _| acc * 10);
            nanos += numerator * unit_nanos / scale;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        if total > i64::MAX as u128 {
            return Err(overflow());
        }
    }
    if negative && total != 0 {
        return Err(invalid("negative durations are not supported"));
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| overflow())
}

/// Parses a size as nats-server does: an integer with an optional
/// case-insensitive suffix, `k`/`m`/`g`/`t`/`p`/`e` for powers of 1000 and
/// `kb`/`ki`/`kib` (and likewise for the others) for powers of 1024.
///
/// # Errors
///
/// Returns [`NatsConfError::InvalidSize`] if the text is not such a number or
/// the result does not fit in an `i64`.
pub fn parse_size(s: &str) -> Result<i64, NatsConfError> {
    let invalid = |reason| NatsConfError::InvalidSize {
        input: s.to_string(),
        reason,
    };
    match size_value(s.trim()) {
        SizeValue::Value(n) => Ok(n),
        SizeValue::NotASize => Err(invalid(
            "expected an integer with an optional suffix such as k, kb, mib or g",
        )),
        SizeValue::Overflow => Err(invalid("value does not fit in a 64-bit integer")),
    }
}

/// The nats-server configuration format for the `config` crate, so that
/// `config::File::from_str(text, NatsConfFormat)` and
/// `config::File::new(path, NatsConfFormat)` work.
///
/// Relative includes resolve against the directory of the file `config`
/// reports, or the current directory for text sources.
#[derive(Debug, Clone, Copy, Default)]
pub struct NatsConfFormat;

impl config::Format for NatsConfFormat {
    fn parse(
        &self,
        uri: Option<&String>,
        text: &str,
    ) -> Result<Map<String, Value>, Box<dyn Error + Send + Sync>> {
        parse_str(text, uri.map(Path::new)).map_err(Into::into)
    }
}

impl config::FileStoredFormat for NatsConfFormat {
    fn file_extensions(&self) -> &'static [&'static str] {
        &["conf"]
    }
}

enum SizeValue {
    Value(i64),
    NotASize,
    Overflow,
}

fn size_value(s: &str) -> SizeValue {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (digits, suffix) = split_digits(unsigned);
    if digits.is_empty() {
        return SizeValue::NotASize;
    }
    const K: i128 = 1000;
    const KI: i128 = 1024;
    let multiplier = match suffix.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => K,
        "kb" | "ki" | "kib" => KI,
        "m" => K.pow(2),
        "mb" | "mi" | "mib" => KI.pow(2),
        "g" => K.pow(3),
        "gb" | "gi" | "gib" => KI.pow(3),
        "t" => K.pow(4),
        "tb" | "ti" | "tib" => KI.pow(4),
        "p" => K.pow(5),
        "pb" | "pi" | "pib" => KI.pow(5),
        "e" => K.pow(6),
        "eb" | "ei" | "eib" => KI.pow(6),
        _ => return SizeValue::NotASize,
    };
    // Leading zeros aside, more digits than this cannot fit in an i64, and
    // the bound keeps the i128 arithmetic below from overflowing.
    let significant = digits.trim_start_matches('0');
    if significant.len() > 19 {
        return SizeValue::Overflow;
    }
    let magnitude: i128 = if significant.is_empty() {
        0
    } else {
        match significant.parse() {
            Ok(n) => n,
            Err(_) => return SizeValue::Overflow,
        }
    };
    let signed = if negative { -magnitude } else { magnitude };
    match i64::try_from(signed * multiplier) {
        Ok(n) => SizeValue::Value(n),
        Err(_) => SizeValue::Overflow,
    }
}

/// Splits off the leading ASCII digits; splitting there is always on a char
/// boundary because ASCII digits are single bytes.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn is_float_literal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int_digits, mut rest) = split_digits(unsigned);
    if int_digits.is_empty() {
        return false;
    }
    let mut has_fraction_or_exponent = false;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let (frac, after_frac) = split_digits(after_dot);
        if frac.is_empty() {
            return false;
        }
        rest = after_frac;
        has_fraction_or_exponent = true;
    }
    if let Some(after_e) = rest.strip_prefix(['e', 'E']) {
        let unsigned_exp = after_e.strip_prefix(['+', '-']).unwrap_or(after_e);
        let (exp, after_exp) = split_digits(unsigned_exp);
        if exp.is_empty() {
            return false;
        }
        rest = after_exp;
        has_fraction_or_exponent = true;
    }
    has_fraction_or_exponent && rest.is_empty()
}

/// Returns the nesting depth of `value` (0 for a scalar) and the number of
/// values it holds, itself included.
fn measure(value: &Value) -> (usize, usize) {
    let children: Box<dyn Iterator<Item = &Value>> = match &value.kind {
        ValueKind::Table(table) => Box::new(table.values()),
        ValueKind::Array(array) => Box::new(array.iter()),
        _ => return (0, 1),
    };
    children.fold((1, 1), |(depth, count), child| {
        let (child_depth, child_count) = measure(child);
        (depth.max(child_depth + 1), count + child_count)
    })
}

fn describe(c: char) -> String {
    match c {
        '\n' | '\r' => "a newline".to_string(),
        c if c.is_control() => format!("{c:?}"),
        c => format!("'{c}'"),
    }
}

fn is_variable_name(name: &str) -> bool {
    // std::env::var_os may panic on names with '=' or NUL, so such names
    // must never reach it.
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '=' || c == '\0')
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    /// File name used in error messages.
    label: String,
    /// File name recorded in each [`Value`], when the text has a file.
    origin: Option<String>,
    /// Directory that relative includes resolve against.
    base_dir: PathBuf,
    /// Maps under construction, innermost last; variables resolve from here.
    scopes: Vec<Map<String, Value>>,
    /// Canonical paths of the files being parsed, outermost first.
    include_chain: Vec<PathBuf>,
    include_depth: usize,
    nesting: usize,
    env_depth: usize,
    /// Values copied by variable references so far, across includes.
    expanded: usize,
    /// Names of entries that were referenced as variables.
    used_variables: VariableNames,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            pos: 0,
            label: STRING_LABEL.to_string(),
            origin: None,
            base_dir: PathBuf::new(),
            scopes: vec![Map::new()],
            include_chain: Vec::new(),
            include_depth: 0,
            nesting: 0,
            env_depth: 0,
            expanded: 0,
            used_variables: VariableNames::new(),
        }
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end).unwrap_or("")
    }

    fn at_comment(&self) -> bool {
        let rest = self.rest();
        rest.starts_with('#') || rest.starts_with("//")
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' || c == '\r' {
                break;
            }
            self.bump();
        }
    }

    fn skip_inline_space(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace() && c != '\n' && c != '\r') {
            self.bump();
        }
    }

    /// Skips spaces and a comment, but not the end of the line.
    fn skip_line_trivia(&mut self) {
        self.skip_inline_space();
        if self.at_comment() {
            self.skip_comment();
        }
    }

    /// Skips whitespace, newlines, comments and, between map entries, the
    /// `,`/`;` separators.
    fn skip_trivia(&mut self, separators: bool) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some(',' | ';') if separators => {
                    self.bump();
                }
                Some(_) if self.at_comment() => self.skip_comment(),
                _ => break,
            }
        }
    }

    fn at_value_end(&self) -> bool {
        matches!(
            self.peek(),
            None | Some('\n' | '\r' | ',' | ';' | '}' | ']')
        ) || self.at_comment()
    }

    fn line_col(&self, pos: usize) -> (usize, usize) {
        let before = self.src.get(..pos).unwrap_or(self.src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    fn error(&self, pos: usize, message: impl Into<String>) -> NatsConfError {
        let (line, column) = self.line_col(pos);
        NatsConfError::Parse {
            file: self.label.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    fn describe_pos(&self, pos: usize) -> String {
        let (line, column) = self.line_col(pos);
        format!("line {line}, column {column}")
    }

    fn insert(&mut self, key: String, value: Value) {
        if self.scopes.is_empty() {
            self.scopes.push(Map::new());
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(key, value);
        }
    }

    /// Parses the whole text and also returns the updated count of values
    /// copied by variable references.
    fn parse_document_counting(
        mut self,
    ) -> Result<(Map<String, Value>, usize, VariableNames), NatsConfError> {
        if let Some(rest) = self.rest().strip_prefix('\u{feff}') {
            self.pos = self.src.len() - rest.len();
        }
        self.skip_trivia(true);
        if self.peek() == Some('{') {
            // A document wrapped in braces, as JSON is.
            let open = self.pos;
            self.bump();
            self.nesting += 1;
            self.parse_entries(Some(open))?;
            self.skip_trivia(true);
            if let Some(c) = self.peek() {
                return Err(self.error(
                    self.pos,
                    format!(
                        "unexpected {} after the '}}' that closes the document",
                        describe(c)
                    ),
                ));
            }
        } else {
            self.parse_entries(None)?;
        }
        Ok((
            self.scopes.pop().unwrap_or_default(),
            self.expanded,
            self.used_variables,
        ))
    }

    /// Parses entries into the innermost scope until the `}` matching the `{`
    /// at `open`, or until the end of input when `open` is `None`.
    fn parse_entries(&mut self, open: Option<usize>) -> Result<(), NatsConfError> {
        loop {
            self.skip_trivia(true);
            let start = self.pos;
            match (self.peek(), open) {
                (None, None) => return Ok(()),
                (None, Some(open)) => {
                    return Err(self.error(
                        start,
                        format!(
                            "unexpected end of input: the '{{' at {} is never closed",
                            self.describe_pos(open)
                        ),
                    ));
                }
                (Some('}'), Some(_)) => {
                    self.bump();
                    return Ok(());
                }
                (Some('}'), None) => {
                    return Err(self.error(start, "unexpected '}' without a matching '{'"));
                }
                (Some(c @ (']' | ':' | '=' | '{' | '[')), _) => {
                    return Err(self.error(start, format!("expected a key, found '{c}'")));
                }
                _ => {}
            }
            let key = self.parse_entry()?;
            self.skip_line_trivia();
            if let Some(c) = self.peek() {
                if !matches!(c, '\n' | '\r' | ',' | ';' | '}') {
                    return Err(self.error(
                        self.pos,
                        format!(
                            "expected a newline, ',' or ';' after the value of \"{key}\", found {}",
                            describe(c)
                        ),
                    ));
                }
            }
        }
    }

    /// Parses one `key value` entry or `include` directive and returns the
    /// key for error messages.
    fn parse_entry(&mut self) -> Result<String, NatsConfError> {
        let key_pos = self.pos;
        let (key, quoted) = self.parse_key()?;
        let key_end = self.pos;
        self.skip_inline_space();
        let spaced = self.pos > key_end;
        // `include` is only a directive when separated from its path by
        // whitespace; `include: x` is an ordinary key, as in nats-server.
        if !quoted
            && spaced
            && key.eq_ignore_ascii_case("include")
            && !self.at_value_end()
            && !matches!(self.peek(), Some(':' | '=' | '{' | '['))
        {
            self.parse_include(key_pos)?;
            return Ok(key);
        }
        let separator = match self.peek() {
            Some(c @ (':' | '=')) => {
                self.bump();
                self.skip_inline_space();
                Some(c)
            }
            _ => None,
        };
        if self.at_value_end() {
            let shown = match separator {
                Some(':') => format!("{key}:"),
                Some(c) => format!("{key} {c}"),
                None => key,
            };
            return Err(self.error(self.pos, format!("expected a value after \"{shown}\"")));
        }
        let value = self.parse_value()?;
        self.insert(key.clone(), value);
        Ok(key)
    }

    fn parse_key(&mut self) -> Result<(String, bool), NatsConfError> {
        let start = self.pos;
        if let Some(quote @ ('"' | '\'')) = self.peek() {
            self.bump();
            let body = self.pos;
            loop {
                match self.peek() {
                    Some(c) if c == quote => {
                        let key = self.slice(body, self.pos).to_string();
                        self.bump();
                        return Ok((key, true));
                    }
                    None | Some('\n' | '\r') => {
                        return Err(self.error(start, "unterminated quoted key"));
                    }
                    Some(_) => {
                        self.bump();
                    }
                }
            }
        }
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, ':' | '=' | '{' | '}' | '[' | ']' | ',' | ';' | '#')
            {
                break;
            }
            self.bump();
        }
        if self.pos == start {
            return Err(self.error(start, "expected a key"));
        }
        Ok((self.slice(start, self.pos).to_string(), false))
    }

    fn parse_value(&mut self) -> Result<Value, NatsConfError> {
        let start = self.pos;
        let kind = match self.peek() {
            Some('{') => {
                self.enter_nesting(start)?;
                self.bump();
                self.scopes.push(Map::new());
                let result = self.parse_entries(Some(start));
                let table = self.scopes.pop().unwrap_or_default();
                self.nesting -= 1;
                result?;
                ValueKind::Table(table)
            }
            Some('[') => {
                self.enter_nesting(start)?;
                self.bump();
                let result = self.parse_array(start);
                self.nesting -= 1;
                ValueKind::Array(result?)
            }
            Some('"') => ValueKind::String(self.parse_double_quoted()?),
            Some('\'') => ValueKind::String(self.parse_single_quoted()?),
            Some('(') if self.block_string_follows() => {
                ValueKind::String(self.parse_block_string()?)
            }
            _ => self.parse_bare()?,
        };
        Ok(Value::new(self.origin.as_ref(), kind))
    }

    fn enter_nesting(&mut self, pos: usize) -> Result<(), NatsConfError> {
        if self.nesting >= MAX_NESTING {
            return Err(self.error(
                pos,
                format!("maps and arrays are nested more than {MAX_NESTING} levels deep"),
            ));
        }
        self.nesting += 1;
        Ok(())
    }

    fn parse_array(&mut self, open: usize) -> Result<Vec<Value>, NatsConfError> {
        let mut items = Vec::new();
        loop {
            self.skip_trivia(false);
            match self.peek() {
                None => {
                    return Err(self.error(
                        self.pos,
                        format!(
                            "unexpected end of input: the '[' at {} is never closed",
                            self.describe_pos(open)
                        ),
                    ));
                }
                Some(']') => {
                    self.bump();
                    return Ok(items);
                }
                Some(c @ (',' | ';' | '}')) => {
                    return Err(self.error(
                        self.pos,
                        format!("expected an array element or ']', found '{c}'"),
                    ));
                }
                Some(_) => {}
            }
            items.push(self.parse_value()?);
            self.skip_line_trivia();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                None | Some('\n' | '\r' | ']') => {}
                Some(c) => {
                    return Err(self.error(
                        self.pos,
                        format!(
                            "expected ',' or ']' after an array element, found {}",
                            describe(c)
                        ),
                    ));
                }
            }
        }
    }

    fn parse_single_quoted(&mut self) -> Result<String, NatsConfError> {
        let start = self.pos;
        self.bump();
        let body = self.pos;
        match self.rest().find('\'') {
            Some(len) => {
                self.pos = body + len + 1;
                Ok(self.slice(body, body + len).to_string())
            }
            None => Err(self.error(start, "unterminated single-quoted string")),
        }
    }

    fn parse_double_quoted(&mut self) -> Result<String, NatsConfError> {
        let start = self.pos;
        self.bump();
        // Bytes, not chars, because `\xHH` escapes may spell out multi-byte
        // UTF-8 sequences one byte at a time, as nats-server allows.
        let mut out: Vec<u8> = Vec::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None => return Err(self.error(start, "unterminated double-quoted string")),
                Some('"') => break,
                Some('\\') => {
                    let escaped = match self.bump() {
                        Some('t') => '\t',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('x') => {
                            let byte = self.parse_hex(2, here)?;
                            out.push(u8::try_from(byte).unwrap_or(b'?'));
                            continue;
                        }
                        Some('u') => self.parse_unicode_escape(here)?,
                        Some(c) => {
                            return Err(self.error(
                                here,
                                format!(
                                    "invalid escape '\\{c}': allowed escapes are \\t \\n \\r \\\" \\\\ \\/ \\b \\f \\xHH \\uXXXX"
                                ),
                            ));
                        }
                        None => {
                            return Err(self.error(start, "unterminated double-quoted string"));
                        }
                    };
                    out.extend_from_slice(escaped.encode_utf8(&mut [0; 4]).as_bytes());
                }
                Some(c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        String::from_utf8(out)
            .map_err(|_| self.error(start, "\\x escapes in this string do not form valid utf-8"))
    }

    fn parse_hex(&mut self, digits: usize, escape_pos: usize) -> Result<u32, NatsConfError> {
        let mut value = 0u32;
        for _ in 0..digits {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    value = value * 16 + d;
                    self.bump();
                }
                None => {
                    return Err(self.error(
                        escape_pos,
                        format!("escape needs {digits} hexadecimal digits"),
                    ));
                }
            }
        }
        Ok(value)
    }

    fn parse_unicode_escape(&mut self, escape_pos: usize) -> Result<char, NatsConfError> {
        let high = self.parse_hex(4, escape_pos)?;
        let code = if (0xD800..0xDC00).contains(&high) {
            // JSON spells characters outside the BMP as surrogate pairs.
            if !self.rest().starts_with("\\u") {
                return Err(self.error(escape_pos, "unpaired surrogate in \\u escape"));
            }
            self.pos += 2;
            let low = self.parse_hex(4, escape_pos)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error(escape_pos, "unpaired surrogate in \\u escape"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code)
            .ok_or_else(|| self.error(escape_pos, "\\u escape is not a valid character"))
    }

    /// A `(` only opens a block string when nothing but spaces or a comment
    /// follows it on its line, so a bare value such as `(x)` stays a string.
    fn block_string_follows(&self) -> bool {
        let line = self.rest().get(1..).unwrap_or("");
        let line = line.split(['\n', '\r']).next().unwrap_or("");
        line.trim().is_empty()
    }

    fn parse_block_string(&mut self) -> Result<String, NatsConfError> {
        let start = self.pos;
        let Some(first_newline) = self.rest().find('\n') else {
            return Err(self.error(
                start,
                "unterminated block string: expected a line holding only ')'",
            ));
        };
        let body = self.pos + first_newline + 1;
        let mut line_start = body;
        loop {
            let line_rest = self.src.get(line_start..).unwrap_or("");
            let line_len = line_rest.find('\n').unwrap_or(line_rest.len());
            let line = line_rest.get(..line_len).unwrap_or("");
            if line.trim() == ")" {
                let content = self.slice(body, line_start);
                let content = content.strip_suffix('\n').unwrap_or(content);
                let content = content.strip_suffix('\r').unwrap_or(content);
                self.pos = line_start + line.find(')').map_or(line_len, |i| i + 1);
                return Ok(content.to_string());
            }
            if line_len == line_rest.len() {
                return Err(self.error(
                    start,
                    "unterminated block string: expected a line holding only ')'",
                ));
            }
            line_start += line_len + 1;
        }
    }

    fn parse_bare(&mut self) -> Result<ValueKind, NatsConfError> {
        let start = self.pos;
        let mut after_space = false;
        while let Some(c) = self.peek() {
            if matches!(c, '\n' | '\r' | ',' | ';' | '}' | ']')
                || (after_space && self.at_comment())
            {
                break;
            }
            after_space = c.is_whitespace();
            self.bump();
        }
        let token = self.slice(start, self.pos).trim_end();
        if token.is_empty() {
            return Err(self.error(start, "expected a value"));
        }
        self.classify_bare(token, start)
    }

    fn classify_bare(&mut self, token: &str, pos: usize) -> Result<ValueKind, NatsConfError> {
        if let Some(name) = token.strip_prefix('$') {
            // nats-server keeps bcrypt hashes, which start with `$2a$`, as
            // strings so they need no quoting.
            if ["2a$", "2b$", "2y$"].iter().any(|p| name.starts_with(p)) {
                return Ok(ValueKind::String(token.to_string()));
            }
            return self.resolve_variable(name, pos);
        }
        match token.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => return Ok(ValueKind::Boolean(true)),
            "false" | "no" | "off" => return Ok(ValueKind::Boolean(false)),
            _ => {}
        }
        match size_value(token) {
            SizeValue::Value(n) => return Ok(ValueKind::I64(n)),
            SizeValue::Overflow => {
                return Err(self.error(
                    pos,
                    format!("integer {token} does not fit in a 64-bit integer"),
                ));
            }
            SizeValue::NotASize => {}
        }
        if is_float_literal(token) {
            return match token.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(ValueKind::Float(f)),
                _ => Err(self.error(pos, format!("float {token} is out of range"))),
            };
        }
        Ok(ValueKind::String(token.to_string()))
    }

    fn resolve_variable(&mut self, name: &str, pos: usize) -> Result<ValueKind, NatsConfError> {
        if !is_variable_name(name) {
            return Err(self.error(pos, format!("invalid variable reference \"${name}\"")));
        }
        if let Some(value) = self.scopes.iter().rev().find_map(|scope| scope.get(name)) {
            self.used_variables.insert(name.to_owned());
            // Every value in the tree stays within MAX_NESTING, which keeps
            // the recursive clone and drop of `Value` from overflowing the
            // stack, so a reference must not push its copy past that bound.
            let (depth, count) = measure(value);
            if self.nesting + depth > MAX_NESTING {
                return Err(self.error(
                    pos,
                    format!(
                        "variable \"{name}\" would nest maps and arrays more than {MAX_NESTING} levels deep here"
                    ),
                ));
            }
            self.expanded += count;
            if self.expanded > MAX_EXPANDED_VALUES {
                return Err(self.error(
                    pos,
                    format!(
                        "variable references copy more than {MAX_EXPANDED_VALUES} values in total"
                    ),
                ));
            }
            return Ok(value.kind.clone());
        }
        match std::env::var_os(name) {
            None => Err(self.error(
                pos,
                format!(
                    "variable \"{name}\" is not defined in any enclosing block nor in the environment"
                ),
            )),
            Some(raw) => match raw.into_string() {
                Ok(text) => self.value_from_env(name, &text, pos),
                Err(_) => Err(self.error(
                    pos,
                    format!("environment variable \"{name}\" is not valid utf-8"),
                )),
            },
        }
    }

    /// Reads an environment variable's text the way a value in the file is
    /// read, so `PORT=4222` yields an integer, as in nats-server.
    fn value_from_env(
        &self,
        name: &str,
        text: &str,
        pos: usize,
    ) -> Result<ValueKind, NatsConfError> {
        if self.env_depth >= MAX_ENV_DEPTH {
            return Err(self.error(
                pos,
                format!("environment variable \"{name}\" refers to variables more than {MAX_ENV_DEPTH} levels deep"),
            ));
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(ValueKind::String(String::new()));
        }
        let mut sub = Parser::new(trimmed);
        sub.label = format!("${name}");
        sub.origin.clone_from(&self.origin);
        sub.base_dir.clone_from(&self.base_dir);
        sub.scopes.clear();
        sub.nesting = self.nesting;
        sub.env_depth = self.env_depth + 1;
        match sub.parse_value() {
            Ok(value) => {
                sub.skip_line_trivia();
                if sub.peek().is_none() {
                    Ok(value.kind)
                } else {
                    // Text such as `a, b` is not a single value; taking it
                    // whole is more useful than taking its first word.
                    Ok(ValueKind::String(trimmed.to_string()))
                }
            }
            Err(e) => Err(self.error(
                pos,
                format!("cannot use environment variable \"{name}\": {e}"),
            )),
        }
    }

    fn parse_include(&mut self, directive_pos: usize) -> Result<(), NatsConfError> {
        let raw = match self.peek() {
            Some('"') => self.parse_double_quoted()?,
            Some('\'') => self.parse_single_quoted()?,
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || matches!(c, ',' | ';' | '}' | ']') {
                        break;
                    }
                    self.bump();
                }
                self.slice(start, self.pos).to_string()
            }
        };
        if raw.is_empty() {
            return Err(self.error(directive_pos, "include needs a file path"));
        }
        let path = self.base_dir.join(&raw);
        let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if let Some(first) = self.include_chain.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.include_chain[first..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| p.display().to_string())
                .collect();
            return Err(self.error(
                directive_pos,
                format!("include cycle detected: {}", chain.join(" -> ")),
            ));
        }
        if self.include_depth >= MAX_INCLUDE_DEPTH {
            return Err(self.error(
                directive_pos,
                format!(
                    "cannot include \"{raw}\": includes are nested more than {MAX_INCLUDE_DEPTH} levels deep"
                ),
            ));
        }
        let bytes = fs::read(&path).map_err(|e| {
            self.error(
                directive_pos,
                format!("cannot read included file \"{}\": {e}", path.display()),
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            self.error(
                directive_pos,
                format!("included file \"{}\" is not valid utf-8", path.display()),
            )
        })?;
        let label = path.display().to_string();
        let mut child = Parser::new(&text);
        child.origin = Some(label.clone());
        child.label = label;
        child.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        child.include_chain = self.include_chain.clone();
        child.include_chain.push(canonical);
        child.include_depth = self.include_depth + 1;
        child.nesting = self.nesting;
        child.expanded = self.expanded;
        let (map, expanded, used) = child.parse_document_counting()?;
        self.expanded = expanded;
        self.used_variables.extend(used);
        for (key, value) in map {
            self.insert(key, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse(text: &str) -> Map<String, Value> {
        match parse_str(text, None) {
            Ok(map) => map,
            Err(e) => panic!("parse failed: {e}\n--- input ---\n{text}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse_str(text, None) {
            Ok(map) => panic!("expected an error, got {map:?}\n--- input ---\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// Follows a dotted path, with numeric segments indexing arrays.
    fn get<'m>(map: &'m Map<String, Value>, path: &str) -> &'m Value {
        let mut segments = path.split('.');
        let first = segments.next().expect("empty path");
        let mut value = map
            .get(first)
            .unwrap_or_else(|| panic!("missing key {first} in {path}"));
        for segment in segments {
            value = match &value.kind {
                ValueKind::Table(t) => t
                    .get(segment)
                    .unwrap_or_else(|| panic!("missing key {segment} in {path}")),
                ValueKind::Array(a) => {
                    let i: usize = segment.parse().expect("array index");
                    a.get(i)
                        .unwrap_or_else(|| panic!("missing index {i} in {path}"))
                }
                other => panic!("cannot descend into {other:?} at {segment} in {path}"),
            };
        }
        value
    }

    fn int(map: &Map<String, Value>, path: &str) -> i64 {
        match get(map, path).kind {
            ValueKind::I64(n) => n,
            ref other => panic!("{path}: expected an integer, got {other:?}"),
        }
    }

    fn float(map: &Map<String, Value>, path: &str) -> f64 {
        match get(map, path).kind {
            ValueKind::Float(f) => f,
            ref other => panic!("{path}: expected a float, got {other:?}"),
        }
    }

    fn string(map: &Map<String, Value>, path: &str) -> String {
        match &get(map, path).kind {
            ValueKind::String(s) => s.clone(),
            other => panic!("{path}: expected a string, got {other:?}"),
        }
    }

    fn boolean(map: &Map<String, Value>, path: &str) -> bool {
        match get(map, path).kind {
            ValueKind::Boolean(b) => b,
            ref other => panic!("{path}: expected a boolean, got {other:?}"),
        }
    }

    fn len(map: &Map<String, Value>, path: &str) -> usize {
        match &get(map, path).kind {
            ValueKind::Array(a) => a.len(),
            ValueKind::Table(t) => t.len(),
            other => panic!("{path}: expected an array or table, got {other:?}"),
        }
    }

    /// A fresh directory per test, so parallel tests never share files.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir()
                .join(format!("natsconf-{tag}-{}-{n}-{nanos}", std::process::id()));
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create parent dir");
            }
            fs::write(&path, text).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn all_key_value_separators() {
        let m = parse("a: 1\nb = 2\nc 3\nd:4\ne=5\n  f\t6\n");
        for (key, want) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 6)] {
            assert_eq!(int(&m, key), want, "key {key}");
        }
    }

    #[test]
    fn all_entry_separators() {
        let m = parse("a: 1, b: 2; c: 3\nd: x,e: y;f: z;\n,;\ng: 7,");
        assert_eq!(int(&m, "a"), 1);
        assert_eq!(int(&m, "b"), 2);
        assert_eq!(int(&m, "c"), 3);
        assert_eq!(string(&m, "d"), "x");
        assert_eq!(string(&m, "e"), "y");
        assert_eq!(string(&m, "f"), "z");
        assert_eq!(int(&m, "g"), 7);
        let m = parse("block { a: 1, b: 2; c = 3\n d 4 }");
        assert_eq!(len(&m, "block"), 4);
        assert_eq!(int(&m, "block.d"), 4);
    }

    #[test]
    fn nested_blocks_from_the_docs() {
        let m = parse(
            "authorization { users = [ {user: a, password: b}, {user: c, password: d} ] }\n\
             cluster { name: c1, listen: 0.0.0.0:6222, routes: [ nats-route://a:6222, nats-route://b:6222 ] }\n\
             jetstream { store_dir: \"/data\", max_mem: 1G }\n",
        );
        assert_eq!(len(&m, "authorization.users"), 2);
        assert_eq!(string(&m, "authorization.users.0.user"), "a");
        assert_eq!(string(&m, "authorization.users.0.password"), "b");
        assert_eq!(string(&m, "authorization.users.1.user"), "c");
        assert_eq!(string(&m, "cluster.name"), "c1");
        assert_eq!(string(&m, "cluster.listen"), "0.0.0.0:6222");
        assert_eq!(string(&m, "cluster.routes.0"), "nats-route://a:6222");
        assert_eq!(string(&m, "cluster.routes.1"), "nats-route://b:6222");
        assert_eq!(string(&m, "jetstream.store_dir"), "/data");
        assert_eq!(int(&m, "jetstream.max_mem"), 1_000_000_000);
    }

    #[test]
    fn block_forms_and_multiline_arrays() {
        let m = parse(
            "a {\n  x: 1\n}\nb: {\n  y: 2\n}\nc = { z: 3 }\nd {}\ne: []\n\
             f [\n  1\n  2,\n  3,\n]\ng: [[1, 2], [3]]\nh: [{}, {k: v}]\n",
        );
        assert_eq!(int(&m, "a.x"), 1);
        assert_eq!(int(&m, "b.y"), 2);
        assert_eq!(int(&m, "c.z"), 3);
        assert_eq!(len(&m, "d"), 0);
        assert_eq!(len(&m, "e"), 0);
        assert_eq!(len(&m, "f"), 3);
        assert_eq!(int(&m, "f.2"), 3);
        assert_eq!(int(&m, "g.0.1"), 2);
        assert_eq!(int(&m, "g.1.0"), 3);
        assert_eq!(string(&m, "h.1.k"), "v");
    }

    #[test]
    fn json_documents_parse() {
        let m = parse(
            r#"{
                "port": 4222,
                "debug": false,
                "ratio": 0.5,
                "big": 1.5e3,
                "cluster": {"name": "c1", "routes": ["nats://a:6222", "nats://b:6222"]},
                "empty": {}, "list": []
            }"#,
        );
        assert_eq!(int(&m, "port"), 4222);
        assert!(!boolean(&m, "debug"));
        assert!((float(&m, "ratio") - 0.5).abs() < f64::EPSILON);
        assert!((float(&m, "big") - 1500.0).abs() < f64::EPSILON);
        assert_eq!(string(&m, "cluster.routes.1"), "nats://b:6222");
        assert_eq!(len(&m, "empty"), 0);
        assert!(parse_err(r#"{"a": 1} b: 2"#).contains("after the '}' that closes the document"));
    }

    #[test]
    fn comments_in_every_position() {
        let m = parse(
            "# leading hash comment\n\
             // leading slash comment\n\
             port: 4222 # trailing hash\n\
             host: 0.0.0.0 // trailing slashes\n\
             cluster { # after brace\n\
               // own line inside block\n\
               name: c1 // after value in block\n\
               routes: [ # after bracket\n\
                 # own line in array\n\
                 nats://a:6222, # after element\n\
                 nats://b:6222 // last element\n\
               ] # after array\n\
             } // after block\n\
             url: nats://host//path\n\
             password: abc#def//ghi\n\
             quoted: \"has # and // inside\" # real comment\n\
             # trailing comment without newline",
        );
        assert_eq!(int(&m, "port"), 4222);
        assert_eq!(string(&m, "host"), "0.0.0.0");
        assert_eq!(string(&m, "cluster.name"), "c1");
        assert_eq!(len(&m, "cluster.routes"), 2);
        assert_eq!(string(&m, "cluster.routes.1"), "nats://b:6222");
        assert_eq!(string(&m, "url"), "nats://host//path");
        assert_eq!(string(&m, "password"), "abc#def//ghi");
        assert_eq!(string(&m, "quoted"), "has # and // inside");
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn quoted_keys() {
        let m =
            parse("\"quoted key\": 1\n'single key' = 2\n\"a.b\" 3\n\"\": 4\n\"include\" \"x\"\n");
        assert_eq!(int(&m, "quoted key"), 1);
        assert_eq!(int(&m, "single key"), 2);
        assert!(m.contains_key("a.b"));
        assert!(m.contains_key(""));
        assert_eq!(string(&m, "include"), "x");
    }

    #[test]
    fn keys_keep_their_case() {
        let m = parse("MaxPayload: 1\nmax_payload: 2\n");
        assert_eq!(int(&m, "MaxPayload"), 1);
        assert_eq!(int(&m, "max_payload"), 2);
    }

    #[test]
    fn string_escapes() {
        let m = parse(
            r#"a: "tab\tnl\ncr\rquote\"backslash\\slash\/"
b: "\u00e9\u4e2d\ud83d\ude00"
c: "\x41\xc3\xa9"
d: 'raw \n \t \\ "kept"'
e: "multi
line"
f: ""
"#,
        );
        assert_eq!(string(&m, "a"), "tab\tnl\ncr\rquote\"backslash\\slash/");
        assert_eq!(string(&m, "b"), "é中😀");
        assert_eq!(string(&m, "c"), "Aé");
        assert_eq!(string(&m, "d"), r#"raw \n \t \\ "kept""#);
        assert_eq!(string(&m, "e"), "multi\nline");
        assert_eq!(string(&m, "f"), "");
        assert!(parse_err(r#"a: "bad \q escape""#).contains("invalid escape '\\q'"));
        assert!(parse_err(r#"a: "\u12""#).contains("4 hexadecimal digits"));
        assert!(parse_err(r#"a: "\ud83d alone""#).contains("unpaired surrogate"));
        assert!(parse_err(r#"a: "\xff""#).contains("valid utf-8"));
    }

    #[test]
    fn size_suffixes() {
        let m = parse(
            "a: 1k\nb: 1kb\nc: 1Ki\nd: 1KiB\ne: 2m\nf: 2MB\ng: 1g\nh: 1GB\ni: 1gi\n\
             j: 1t\nk: 1TB\nl: 1p\nm: 1pib\nn: 1e\no: 1EB\np: -2k\nq: 007\n",
        );
        let k = 1000i64;
        let ki = 1024i64;
        let want = [
            ("a", k),
            ("b", ki),
            ("c", ki),
            ("d", ki),
            ("e", 2 * k * k),
            ("f", 2 * ki * ki),
            ("g", k.pow(3)),
            ("h", ki.pow(3)),
            ("i", ki.pow(3)),
            ("j", k.pow(4)),
            ("k", ki.pow(4)),
            ("l", k.pow(5)),
            ("m", ki.pow(5)),
            ("n", k.pow(6)),
            ("o", ki.pow(6)),
            ("p", -2000),
            ("q", 7),
        ];
        for (key, n) in want {
            assert_eq!(int(&m, key), n, "key {key}");
        }
        assert!(parse_err("a: 10e").contains("does not fit"));
        assert!(parse_err("a: 99999999999999999999").contains("does not fit"));
        // An unknown suffix makes the word a string, as in nats-server.
        assert_eq!(string(&parse("a: 1x"), "a"), "1x");
        assert_eq!(string(&parse("a: 1kbb"), "a"), "1kbb");
    }

    #[test]
    fn parse_size_helper() {
        assert_eq!(parse_size("8MB").ok(), Some(8 * 1024 * 1024));
        assert_eq!(parse_size(" 64k ").ok(), Some(64_000));
        assert_eq!(parse_size("-1").ok(), Some(-1));
        assert_eq!(parse_size("9223372036854775807").ok(), Some(i64::MAX));
        assert_eq!(parse_size("-9223372036854775808").ok(), Some(i64::MIN));
        assert!(parse_size("9223372036854775808").is_err());
        assert!(parse_size("8EiB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("1 k").is_err());
        let e = parse_size("1zb").expect_err("unknown suffix");
        assert!(e.to_string().starts_with("invalid size \"1zb\": "), "{e}");
    }

    #[test]
    fn numbers_negative_and_float() {
        let m = parse("a: -1\nb: -1.5\nc: 0\nd: 3.25\ne: 2e3\nf: -4E-2\ng: 1.\nh: .5\ni: -x\n");
        assert_eq!(int(&m, "a"), -1);
        assert!((float(&m, "b") + 1.5).abs() < f64::EPSILON);
        assert_eq!(int(&m, "c"), 0);
        assert!((float(&m, "d") - 3.25).abs() < f64::EPSILON);
        assert!((float(&m, "e") - 2000.0).abs() < f64::EPSILON);
        assert!((float(&m, "f") + 0.04).abs() < f64::EPSILON);
        assert_eq!(string(&m, "g"), "1.");
        assert_eq!(string(&m, "h"), ".5");
        assert_eq!(string(&m, "i"), "-x");
        assert!(parse_err("a: 1e999").contains("out of range"));
    }

    #[test]
    fn boolean_variants() {
        let m = parse(
            "a: true\nb: TRUE\nc: yes\nd: Yes\ne: on\nf: ON\n\
             g: false\nh: False\ni: no\nj: NO\nk: off\nl: Off\nm: \"true\"\nn: 'no'\n",
        );
        for key in ["a", "b", "c", "d", "e", "f"] {
            assert!(boolean(&m, key), "key {key}");
        }
        for key in ["g", "h", "i", "j", "k", "l"] {
            assert!(!boolean(&m, key), "key {key}");
        }
        assert_eq!(string(&m, "m"), "true");
        assert_eq!(string(&m, "n"), "no");
    }

    #[test]
    fn bare_strings() {
        let m = parse(
            "host: 0.0.0.0\nlisten: 127.0.0.1:4222\nsync_interval: always   \n\
             write_deadline: 10s\nping: 500ms\nlong: 1h30m\nquoted: \"2m\"\nbare_2m: 2m\n\
             spaced: hello world  # comment\nurl: nats://u:p@host:4222\n\
             date: 2016-05-04T18:53:41Z\nnull_word: null\npath: C:\\data\\nats\n",
        );
        assert_eq!(string(&m, "host"), "0.0.0.0");
        assert_eq!(string(&m, "listen"), "127.0.0.1:4222");
        assert_eq!(string(&m, "sync_interval"), "always");
        assert_eq!(string(&m, "write_deadline"), "10s");
        assert_eq!(string(&m, "ping"), "500ms");
        assert_eq!(string(&m, "long"), "1h30m");
        assert_eq!(string(&m, "quoted"), "2m");
        // nats-server reads a bare `2m` as the size 2 * 1000 * 1000.
        assert_eq!(int(&m, "bare_2m"), 2_000_000);
        assert_eq!(string(&m, "spaced"), "hello world");
        assert_eq!(string(&m, "url"), "nats://u:p@host:4222");
        assert_eq!(string(&m, "date"), "2016-05-04T18:53:41Z");
        assert_eq!(string(&m, "null_word"), "null");
        assert_eq!(string(&m, "path"), "C:\\data\\nats");
    }

    #[test]
    fn block_strings() {
        let m = parse("cert: (\n-----BEGIN-----\nabc)\n-----END-----\n)\nafter: 1\ninline: (x)\n");
        assert_eq!(string(&m, "cert"), "-----BEGIN-----\nabc)\n-----END-----");
        assert_eq!(int(&m, "after"), 1);
        assert_eq!(string(&m, "inline"), "(x)");
        assert!(parse_err("a: (\nno end\n").contains("unterminated block string"));
    }

    #[test]
    fn duplicate_keys_later_wins() {
        let m = parse("port: 1\nport: 2\ncluster { name: a }\ncluster { port: 3 }\n");
        assert_eq!(int(&m, "port"), 2);
        assert_eq!(int(&m, "cluster.port"), 3);
        assert_eq!(len(&m, "cluster"), 1);
    }

    #[test]
    fn variables_resolve_through_enclosing_blocks() {
        let m = parse(
            "PORT = 4222\nHOST: \"127.0.0.1\"\nport: $PORT\n\
             cluster {\n  PORT = 6222\n  port: $PORT\n  host: $HOST\n  routes: [$HOST, {h: $PORT}]\n}\n\
             after: $PORT\nrefs_map: { a: 1 }\ncopy: $refs_map\n",
        );
        assert_eq!(int(&m, "port"), 4222);
        assert_eq!(int(&m, "cluster.port"), 6222);
        assert_eq!(string(&m, "cluster.host"), "127.0.0.1");
        assert_eq!(string(&m, "cluster.routes.0"), "127.0.0.1");
        assert_eq!(int(&m, "cluster.routes.1.h"), 6222);
        assert_eq!(int(&m, "after"), 4222);
        assert_eq!(int(&m, "copy.a"), 1);
        // Definitions stay in the map, as nats-server leaves them.
        assert_eq!(int(&m, "PORT"), 4222);
    }

    #[test]
    fn variable_edge_cases() {
        let m = parse("pass: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG\n");
        assert_eq!(
            string(&m, "pass"),
            "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
        );
        // A reference is a whole value; `$` inside a string is literal.
        let m = parse("A: 1\nquoted: \"$A\"\ninside: x$A\n");
        assert_eq!(string(&m, "quoted"), "$A");
        assert_eq!(string(&m, "inside"), "x$A");
        // A block's own variables are not visible after the block ends.
        let e = parse_err("inner { NATSCONF_SCOPED_X9 = 1 }\nv: $NATSCONF_SCOPED_X9\n");
        assert!(e.contains("\"NATSCONF_SCOPED_X9\" is not defined"), "{e}");
        assert!(parse_err("a: $").contains("invalid variable reference"));
        assert!(parse_err("a: $X=Y").contains("invalid variable reference"));
    }

    #[test]
    fn undefined_variable_is_an_error_naming_it() {
        let e = parse_err("port: 1\nmax: $NATSCONF_TEST_SURELY_UNDEFINED_9F3A\n");
        assert_eq!(
            e,
            "<string>:2:6: variable \"NATSCONF_TEST_SURELY_UNDEFINED_9F3A\" is not defined in any enclosing block nor in the environment"
        );
    }

    #[test]
    fn variables_fall_back_to_the_environment() {
        // Reading, never setting, the environment keeps the test safe to run
        // in parallel and free of `unsafe`.
        let found = std::env::vars().find(|(name, value)| {
            name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && !value.is_empty()
                && value.chars().all(|c| c.is_ascii_alphabetic())
                && !["true", "false", "yes", "no", "on", "off"]
                    .contains(&value.to_ascii_lowercase().as_str())
        });
        if let Some((name, value)) = found {
            let m = parse(&format!("v: ${name}\n"));
            assert_eq!(string(&m, "v"), value);
            // A definition in the file shadows the environment.
            let m = parse(&format!("{name}: 5\nv: ${name}\n"));
            assert_eq!(int(&m, "v"), 5);
        }
        let m = parse("v: $PATH\n");
        assert!(m.contains_key("v"));
    }

    #[test]
    fn environment_text_is_read_as_a_value() {
        let parser = Parser::new("");
        let read = |text: &str| parser.value_from_env("X", text, 0).expect("env value");
        assert_eq!(read("4222"), ValueKind::I64(4222));
        assert_eq!(read(" 1MB "), ValueKind::I64(1024 * 1024));
        assert_eq!(read("true"), ValueKind::Boolean(true));
        assert_eq!(read("\"quoted\""), ValueKind::String("quoted".into()));
        assert_eq!(read("a, b"), ValueKind::String("a, b".into()));
        assert_eq!(read(""), ValueKind::String(String::new()));
        assert!(matches!(read("[1, 2]"), ValueKind::Array(a) if a.len() == 2));
        let e = parser
            .value_from_env("X", "$NATSCONF_TEST_SURELY_UNDEFINED_9F3A", 0)
            .expect_err("undefined nested variable");
        assert!(
            e.to_string()
                .contains("cannot use environment variable \"X\""),
            "{e}"
        );
    }

    #[test]
    fn include_splices_files() {
        let dir = TempDir::new("include");
        dir.write(
            "sub/users.conf",
            "users = [\n  {user: alice, password: $NATSCONF_T_PASS}\n]\nNATSCONF_T_PASS: secret\n",
        );
        dir.write("sub/pass.conf", "NATSCONF_T_PASS: s3cr3t\n");
        dir.write(
            "common.conf",
            "port: 4222\nSHARED = shared-value\n# only a comment\n",
        );
        let main = dir.write(
            "main.conf",
            "include ./common.conf\n\
             authorization {\n  include \"sub/pass.conf\"\n  include 'sub/users.conf'\n  timeout: 2\n}\n\
             from_include: $SHARED\nport: 5222\n",
        );
        // `$NATSCONF_T_PASS` in users.conf is resolved within users.conf, which has its
        // own scope, so it must be defined there.
        let e = parse_file(&main).expect_err("PASS is not visible in users.conf");
        assert!(e.to_string().contains("users.conf:2:"), "{e}");
        assert!(
            e.to_string().contains("\"NATSCONF_T_PASS\" is not defined"),
            "{e}"
        );

        dir.write(
            "sub/users.conf",
            "NATSCONF_T_PASS: secret\nusers = [\n  {user: alice, password: $NATSCONF_T_PASS}\n]\n",
        );
        let m = parse_file(&main).expect("parse with includes");
        assert_eq!(
            int(&m, "port"),
            5222,
            "later entry overrides the included one"
        );
        assert_eq!(string(&m, "from_include"), "shared-value");
        assert_eq!(string(&m, "authorization.users.0.password"), "secret");
        assert_eq!(string(&m, "authorization.NATSCONF_T_PASS"), "secret");
        assert_eq!(int(&m, "authorization.timeout"), 2);

        // The same text through parse_str with an origin file or directory.
        let text = fs::read_to_string(&main).expect("read main");
        let m = parse_str(&text, Some(&main)).expect("origin file");
        assert_eq!(string(&m, "from_include"), "shared-value");
        let m = parse_str(&text, Some(&dir.0)).expect("origin dir");
        assert_eq!(string(&m, "from_include"), "shared-value");
        assert_eq!(get(&m, "port").origin(), None);
        let m = parse_str(&text, Some(&main)).expect("origin file");
        assert_eq!(
            get(&m, "port").origin(),
            Some(main.display().to_string().as_str())
        );
    }

    #[test]
    fn include_errors() {
        let dir = TempDir::new("include-err");
        let a = dir.write("a.conf", "x: 1\ninclude b.conf\n");
        dir.write("b.conf", "include ./a.conf\n");
        let e = parse_file(&a).expect_err("cycle").to_string();
        assert!(e.contains("include cycle detected"), "{e}");
        assert!(e.contains("b.conf:1:1"), "{e}");

        let own = dir.write("self.conf", "include self.conf\n");
        let e = parse_file(&own).expect_err("self include").to_string();
        assert!(e.contains("include cycle detected"), "{e}");

        for i in 0..15 {
            dir.write(
                &format!("chain{i}.conf"),
                &format!("include chain{}.conf\n", i + 1),
            );
        }
        let e = parse_file(&dir.0.join("chain0.conf"))
            .expect_err("too deep")
            .to_string();
        assert!(e.contains("nested more than 10 levels"), "{e}");

        let missing = dir.write("missing.conf", "port: 1\n  include nope.conf\n");
        let e = parse_file(&missing).expect_err("missing").to_string();
        assert!(
            e.contains("missing.conf:2:3: cannot read included file"),
            "{e}"
        );

        let broken = dir.write("broken.conf", "ok: 1\ninclude bad.conf\n");
        dir.write("bad.conf", "\n\nport: [1, 2\n");
        let e = parse_file(&broken).expect_err("bad include").to_string();
        assert!(e.contains("bad.conf:4:1: unexpected end of input"), "{e}");

        let e = parse_file(&dir.0.join("absent.conf")).expect_err("absent root");
        assert!(matches!(e, NatsConfError::Io { .. }), "{e}");
        // `include` as a plain key is not a directive.
        let m = parse("include: yes\ninclude = 2\n");
        assert_eq!(int(&m, "include"), 2);
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let e = parse_err("port: 4222\n\ncluster {\n  name: \n}\n");
        assert_eq!(e, "<string>:4:9: expected a value after \"name:\"");
        let named = parse_str(
            "\n\n\n\n\n\n\n\n\n\n\n    port:",
            Some(Path::new("nats.conf")),
        )
        .expect_err("missing value")
        .to_string();
        assert_eq!(named, "nats.conf:12:10: expected a value after \"port:\"");
        assert_eq!(
            parse_err("a =\n"),
            "<string>:1:4: expected a value after \"a =\""
        );
        assert_eq!(
            parse_err("a b c\nd"),
            "<string>:2:2: expected a value after \"d\""
        );
        assert_eq!(
            parse_err("a: 1\nb: \"open\n"),
            "<string>:2:4: unterminated double-quoted string"
        );
        assert_eq!(
            parse_err("a: 'open"),
            "<string>:1:4: unterminated single-quoted string"
        );
        assert_eq!(
            parse_err("a {\n  b: 1\n"),
            "<string>:3:1: unexpected end of input: the '{' at line 1, column 3 is never closed"
        );
        assert_eq!(
            parse_err("a: 1\n}"),
            "<string>:2:1: unexpected '}' without a matching '{'"
        );
        assert_eq!(
            parse_err("a: [\"x\" 2]"),
            "<string>:1:9: expected ',' or ']' after an array element, found '2'"
        );
        assert_eq!(
            parse_err("a: [1,,2]"),
            "<string>:1:7: expected an array element or ']', found ','"
        );
        assert_eq!(
            parse_err("a: \"x\" y"),
            "<string>:1:8: expected a newline, ',' or ';' after the value of \"a\", found 'y'"
        );
        assert_eq!(parse_err(": 1"), "<string>:1:1: expected a key, found ':'");
        assert_eq!(
            parse_err("\"key\n: 1"),
            "<string>:1:1: unterminated quoted key"
        );
        // Columns count characters, not bytes.
        assert_eq!(
            parse_err("\"ü é\": $"),
            "<string>:1:8: invalid variable reference \"$\""
        );
    }

    #[test]
    fn crlf_and_bom() {
        let m = parse(
            "\u{feff}port: 4222\r\ncluster {\r\n  name: c1\r\n}\r\nlist: [\r\n  a\r\n  b\r\n]\r\n",
        );
        assert_eq!(int(&m, "port"), 4222);
        assert_eq!(string(&m, "cluster.name"), "c1");
        assert_eq!(string(&m, "list.1"), "b");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let e = parse_err(&format!("a: {}", "[".repeat(100_000)));
        assert!(e.contains("nested more than 64 levels"), "{e}");
        let e = parse_err(&format!("a {}", "{ b ".repeat(100_000)));
        assert!(e.contains("nested more than 64 levels"), "{e}");
        let fine = format!("a: {}1{}", "[".repeat(60), "]".repeat(60));
        assert!(parse_str(&fine, None).is_ok());
    }

    #[test]
    fn variable_copies_are_bounded() {
        let mut text = String::from("L0: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n");
        for level in 1..10 {
            let refs = vec![format!("$L{}", level - 1); 10].join(", ");
            text.push_str(&format!("L{level}: [{refs}]\n"));
        }
        let e = parse_err(&text);
        assert!(e.contains("copy more than 1000000 values"), "{e}");

        let deep = format!("A: {}1{}\n", "[".repeat(60), "]".repeat(60));
        let m = parse(&format!("{deep}B: [[[$A]]]\n"));
        assert_eq!(int(&m, &format!("B{}", ".0".repeat(63))), 1);
        let e = parse_err(&format!("{deep}B: [[[[[$A]]]]]\n"));
        assert!(
            e.contains("would nest maps and arrays more than 64 levels"),
            "{e}"
        );
    }

    const FULL_SAMPLE: &str = r#"# Sample nats-server configuration, after the examples on docs.nats.io.

server_name: "n1-c1"
listen: 0.0.0.0:4222
http: 8222
# Variables for later reuse.
PASS: "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
ROUTE_PORT = 6222

max_connections: 64K
max_control_line: 4KB
max_payload: 1MB
max_pending: 64MB
ping_interval: "2m"
ping_max: 2
write_deadline: "10s"
lame_duck_duration: "2m"
debug: false
trace: false
logtime: true
log_file: "/var/log/nats-server.log"
pid_file: "/var/run/nats-server.pid"

tls {
  cert_file: "./certs/server-cert.pem"
  key_file:  "./certs/server-key.pem"
  ca_file:   "./certs/ca.pem"
  verify:    true
  timeout:   2
}

authorization {
  ADMIN = {
    publish = ">"
    subscribe = ">"
  }
  REQUESTOR = {
    publish = ["req.a", "req.b"]
    subscribe = "_INBOX.>"
  }
  users = [
    {user: admin,  password: $PASS, permissions: $ADMIN}
    {user: client, password: $PASS, permissions: $REQUESTOR}
    {nkey: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4}
  ]
}

accounts {
  SYS: { users: [ {user: sys, password: sys} ] }
  APP: {
    jetstream: enabled
    users: [ {user: app, password: app} ]
    exports: [ {stream: "events.>"}, {service: "help"} ]
  }
}
system_account: SYS

cluster {
  name: c1
  listen: 0.0.0.0:$ROUTE_PORT
  port: $ROUTE_PORT
  authorization {
    user: ruser
    password: T0pS3cr3t
    timeout: 0.5
  }
  routes = [
    nats-route://ruser:T0pS3cr3t@n2:6222
    nats-route://ruser:T0pS3cr3t@n3:6222
  ]
}

jetstream {
  store_dir: "/data/jetstream"
  max_memory_store: 1G
  max_file_store: 10GB
  sync_interval: always
}

leafnodes {
  port: 7422
  remotes = [
    { url: "nats-leaf://hub:7422", credentials: "/etc/nats/leaf.creds" }
  ]
}

mqtt { port: 1883, ack_wait: "1m", max_ack_pending: 100 }
websocket { port: 8080; no_tls: true; compression: on }
"#;

    #[test]
    fn realistic_full_config_parses() {
        let m = parse(FULL_SAMPLE);
        assert_eq!(string(&m, "server_name"), "n1-c1");
        assert_eq!(string(&m, "listen"), "0.0.0.0:4222");
        assert_eq!(int(&m, "http"), 8222);
        assert_eq!(int(&m, "max_connections"), 64_000);
        assert_eq!(int(&m, "max_control_line"), 4096);
        assert_eq!(int(&m, "max_payload"), 1024 * 1024);
        assert_eq!(string(&m, "ping_interval"), "2m");
        assert!(boolean(&m, "logtime"));
        assert!(boolean(&m, "tls.verify"));
        assert_eq!(string(&m, "authorization.users.0.permissions.publish"), ">");
        assert_eq!(
            string(&m, "authorization.users.1.permissions.publish.1"),
            "req.b"
        );
        assert!(string(&m, "authorization.users.1.password").starts_with("$2a$11$"));
        assert_eq!(len(&m, "authorization.users"), 3);
        assert_eq!(string(&m, "accounts.APP.exports.0.stream"), "events.>");
        assert_eq!(string(&m, "accounts.APP.jetstream"), "enabled");
        // Only a whole value is a reference, so this stays literal.
        assert_eq!(string(&m, "cluster.listen"), "0.0.0.0:$ROUTE_PORT");
        assert_eq!(int(&m, "cluster.port"), 6222);
        assert!((float(&m, "cluster.authorization.timeout") - 0.5).abs() < f64::EPSILON);
        assert_eq!(len(&m, "cluster.routes"), 2);
        assert_eq!(int(&m, "jetstream.max_memory_store"), 1_000_000_000);
        assert_eq!(int(&m, "jetstream.max_file_store"), 10 * 1024 * 1024 * 1024);
        assert_eq!(
            string(&m, "leafnodes.remotes.0.url"),
            "nats-leaf://hub:7422"
        );
        assert_eq!(int(&m, "mqtt.max_ack_pending"), 100);
        assert!(boolean(&m, "websocket.compression"));
        let ping = parse_duration(&string(&m, "ping_interval")).expect("duration");
        assert_eq!(ping, Duration::from_secs(120));
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("+5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("2h45m10.5s", Duration::from_millis(9_910_500)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("10ns", Duration::from_nanos(10)),
            ("3us", Duration::from_micros(3)),
            ("3µs", Duration::from_micros(3)),
            ("3μs", Duration::from_micros(3)),
            ("1m0.000000001s", Duration::from_nanos(60_000_000_001)),
            ("0.5h", Duration::from_secs(1800)),
            (
                "2562047h47m16.854775807s",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).ok(), Some(want), "{text}");
        }
        for bad in [
            "",
            "1",
            "s",
            "1d",
            "-1s",
            "1.5",
            ".s",
            "1h 30m",
            " 1s",
            "2562047h47m16.854775808s",
            "99999999999999999999999h",
            "1..5s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = parse_duration("5 parsecs").expect_err("bad").to_string();
        assert!(e.starts_with("invalid duration \"5 parsecs\": "), "{e}");
    }

    #[test]
    fn through_the_config_crate() {
        let text =
            "port: 4222\ncluster { name: c1, routes: [nats://a:6222] }\ndebug: yes\nratio: 0.25\n";
        let cfg = config::Config::builder()
            .add_source(config::File::from_str(text, NatsConfFormat))
            .build()
            .expect("build config");
        assert_eq!(cfg.get_int("port").ok(), Some(4222));
        assert_eq!(cfg.get_string("cluster.name").ok().as_deref(), Some("c1"));
        assert_eq!(cfg.get_bool("debug").ok(), Some(true));
        assert_eq!(cfg.get_float("ratio").ok(), Some(0.25));
        assert_eq!(
            cfg.get_array("cluster.routes").map(|a| a.len()).ok(),
            Some(1)
        );

        let bad = config::Config::builder()
            .add_source(config::File::from_str("port: \"open", NatsConfFormat))
            .build();
        let e = bad.expect_err("malformed text").to_string();
        assert!(e.contains("unterminated double-quoted string"), "{e}");

        let dir = TempDir::new("config-crate");
        dir.write("base.conf", "cluster { name: from-include }\n");
        let main = dir.write("server.conf", "port: 7000\ninclude base.conf\n");
        let cfg = config::Config::builder()
            .add_source(config::File::new(
                main.to_str().expect("utf-8 temp path"),
                NatsConfFormat,
            ))
            .build()
            .expect("build config from file");
        assert_eq!(cfg.get_int("port").ok(), Some(7000));
        assert_eq!(
            cfg.get_string("cluster.name").ok().as_deref(),
            Some("from-include")
        );
        assert_eq!(
            config::FileStoredFormat::file_extensions(&NatsConfFormat),
            ["conf"]
        );
    }

    /// Xorshift64: deterministic, dependency-free randomness for the
    /// garbage-in test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_in_never_panics() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            "=",
            ",",
            ";",
            "\n",
            "\r\n",
            " ",
            "\t",
            "#",
            "//",
            "\"",
            "'",
            "\\",
            "\\u",
            "\\x",
            "\\ud83d",
            "$",
            "$A",
            "$2a$",
            "include ",
            "(",
            "(\n",
            "\n)\n",
            ")",
            "-",
            ".",
            "0",
            "1",
            "9",
            "k",
            "kb",
            "MiB",
            "e",
            "E",
            "10s",
            "true",
            "no",
            "key",
            "A = 1",
            "é",
            "😀",
            "\u{feff}",
            "\0",
            "nats://a:1",
            "99999999999999999999",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..6000 {
            let text = match round % 3 {
                0 => {
                    let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => (0..rng.below(60))
                    .map(|_| PIECES[rng.below(PIECES.len())])
                    .collect(),
                _ => {
                    let mut bytes = FULL_SAMPLE.as_bytes().to_vec();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(bytes.len());
                        match rng.below(3) {
                            0 => bytes[at] = rng.next() as u8,
                            1 => bytes.truncate(at),
                            _ => {
                                bytes.remove(at);
                            }
                        }
                        if bytes.is_empty() {
                            break;
                        }
                    }
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            };
            let _ = parse_str(&text, None);
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
        }
    }
}
