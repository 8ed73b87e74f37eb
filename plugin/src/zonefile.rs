//! Key-zone file syntax: master-file lines (RFC 1035 §5) restricted to what a key zone holds
//! (SOA, NS, TPKEY), with TPKEY in our presentation form or in RFC 3597 generic form
//! (`TYPE65300 \# len hex`, `TPKEY \# len hex`). hickory's zone parser accepts neither, so
//! key zones are read here. Every problem is reported as `file:line: reason`.

use std::fmt;
use std::path::{Path, PathBuf};

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::SOA;

use crate::record::{self, KeyRecord, TPKEY, TPKEY_MNEMONIC};

/// One problem in a zone file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line number (0 when the problem concerns the whole zone).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

/// All problems of a zone, reported together (a zone is accepted or refused whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneErrors(pub Vec<ZoneError>);

impl fmt::Display for ZoneErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ZoneErrors {}

/// The RDATA of one line.
#[derive(Debug, Clone)]
pub enum Entry {
    /// Start of authority.
    Soa(SOA),
    /// Name server of the key zone (for secondaries; referrals use TPKEY key-server records).
    Ns(Name),
    /// Address of one of the zone's own name servers (glue), A or AAAA.
    Glue(std::net::IpAddr),
    /// A key record.
    Key(KeyRecord),
}

/// One record line, located.
#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based line where the record starts.
    pub line: usize,
    /// Absolute owner name.
    pub owner: Name,
    /// TTL in seconds.
    pub ttl: u32,
    /// The data.
    pub entry: Entry,
    /// A key line's record as the file writes it, when the loader serves another in its place
    /// (a re-signed copy); `None` from the parser.
    pub written: Option<Box<KeyRecord>>,
}

/// A parsed (not yet checked) key-zone file.
#[derive(Debug, Clone)]
pub struct ParsedZone {
    /// The file read.
    pub file: PathBuf,
    /// The zone's origin.
    pub origin: Name,
    /// The records that parsed, in file order.
    pub lines: Vec<Line>,
    /// Lines that did not parse; the loader reports them with its own findings.
    pub errors: Vec<ZoneError>,
}

impl ParsedZone {
    /// The zone, or every syntax error in it.
    pub fn strict(self) -> Result<Self, ZoneErrors> {
        if self.errors.is_empty() {
            Ok(self)
        } else {
            Err(ZoneErrors(self.errors))
        }
    }
}

const DEFAULT_TTL: u32 = 3600;
/// Upper bound on a key zone file, so a mistaken path cannot exhaust memory (a million
/// members take about 350 MB).
const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// How many line ends `b` holds.
fn newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&b| b == b'\n').count()
}

/// Read and parse a key-zone file whose origin is `origin`.
pub fn read(path: &Path, origin: &Name) -> Result<ParsedZone, ZoneErrors> {
    read_in_pieces(path, origin, 4 << 20)
}

/// [`read`], the text read and parsed `piece` bytes at a time (each piece ends at a line's
/// end; a record not closed yet is carried over), so that the whole file is never in memory
/// beside its lines.
fn read_in_pieces(path: &Path, origin: &Name, piece: u64) -> Result<ParsedZone, ZoneErrors> {
    let whole = |reason: String| {
        ZoneErrors(vec![ZoneError {
            file: path.to_path_buf(),
            line: 0,
            reason,
        }])
    };
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(whole(format!(
            "file is {} bytes, over the limit of {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let cannot = |e: std::io::Error| whole(format!("cannot read: {e}"));
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    // The lines grow as they are read (a Vec that large grows by remapping its pages, not by
    // copying them: counting the lines first measured the same peak, for a second read).
    let mut parser = Parser::new(path, origin, 0);
    let mut buf: Vec<u8> = Vec::new();
    // The line buf[0] is on.
    let mut first = 1usize;
    loop {
        // A record still open after a piece makes the next read as long as what is held, so a
        // stray `(` costs a few passes over the file, not one a piece.
        let want = piece.max(buf.len() as u64);
        let got = std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, want), &mut buf)
            .map_err(cannot)?;
        let eof = got == 0;
        let end = match buf.iter().rposition(|&b| b == b'\n') {
            _ if eof => buf.len(),
            Some(i) => i + 1,
            None => continue,
        };
        let text = std::str::from_utf8(&buf[..end]).map_err(|e| {
            let line = first + newlines(&buf[..e.valid_up_to()]);
            ZoneErrors(vec![ZoneError {
                file: path.to_path_buf(),
                line,
                reason: "not valid UTF-8".into(),
            }])
        })?;
        let used = parser.feed(text, first, eof);
        first += newlines(&buf[..used]);
        buf.drain(..used);
        if eof {
            break;
        }
    }
    Ok(parser.finish())
}

/// Parse key-zone text. `file` is only used in error messages. Lines that do not parse are
/// collected in [`ParsedZone::errors`]; only an unreadable file is an `Err` here.
pub fn parse(file: &Path, text: &str, origin: &Name) -> Result<ParsedZone, ZoneErrors> {
    let mut parser = Parser::new(file, origin, newlines(text.as_bytes()) + 1);
    parser.feed(text, 1, true);
    Ok(parser.finish())
}

/// What parsing keeps between pieces of text: the directives in force, the last owner, and
/// what is parsed so far.
struct Parser<'p> {
    file: &'p Path,
    origin: &'p Name,
    origin_now: Name,
    default_ttl: u32,
    last_owner: Option<Name>,
    lines: Vec<Line>,
    errors: Vec<ZoneError>,
    // What is wrong with the text's layout: listed before a line's other errors.
    layout: Vec<ZoneError>,
}

impl<'p> Parser<'p> {
    fn new(file: &'p Path, origin: &'p Name, capacity: usize) -> Self {
        Self {
            file,
            origin,
            origin_now: origin.clone(),
            default_ttl: DEFAULT_TTL,
            last_owner: None,
            lines: Vec::with_capacity(capacity),
            errors: Vec::new(),
            layout: Vec::new(),
        }
    }

    /// Parse the whole records of `text`, whose first line is line `first`; returns how many
    /// bytes they take (the rest, a record still open, is for the next piece) — all of them
    /// when `last`.
    fn feed(&mut self, text: &str, first: usize, last: bool) -> usize {
        // Logical lines are taken a batch at a time, so that what a line is parsed into and
        // its tokens are held for one batch.
        const BATCH: usize = 1 << 14;
        let mut logical = Logical::new(text, self.file, first, last);
        loop {
            let batch: Vec<_> = logical.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            self.parse_batch(&batch);
        }
        self.layout.append(&mut logical.errors);
        logical.consumed
    }

    fn finish(mut self) -> ParsedZone {
        if self.lines.len() < self.lines.capacity() / 8 * 7 {
            self.lines.shrink_to_fit();
        }
        let mut errors = self.layout;
        errors.append(&mut self.errors);
        errors.sort_by_key(|e| e.line);
        ParsedZone {
            file: self.file.to_path_buf(),
            origin: self.origin.clone(),
            lines: self.lines,
            errors,
        }
    }
}

impl Parser<'_> {
    /// One batch of logical lines parsed into `lines` (or `errors`); the directives change
    /// the state the next lines are read with.
    fn parse_batch(&mut self, batch: &[(usize, Vec<&str>, bool)]) {
        let Self {
            file,
            origin_now,
            default_ttl,
            last_owner,
            lines,
            errors,
            ..
        } = self;
        let file: &Path = file;
        // Lines whose data is decoded below: (the line, its type, its data). Key records are most
        // of a zone and decoding one costs a point decompression: they are decoded after this
        // pass, over the cores. A blank owner takes the previous record line's owner.
        let mut slots: Vec<(usize, Name, u32, Data<'_>)> = Vec::with_capacity(batch.len());
        for (start, tokens, blank_owner) in batch {
            let start = *start;
            let err = |reason: String| ZoneError {
                file: file.to_path_buf(),
                line: start,
                reason,
            };
            let toks: &[&str] = tokens;
            match toks.first().copied() {
                Some("$ORIGIN") => {
                    match toks.get(1).map(|n| name_from(n, origin_now)) {
                        Some(Ok(n)) if toks.len() == 2 => *origin_now = n,
                        Some(Err(e)) => errors.push(err(e)),
                        _ => errors.push(err("$ORIGIN takes one absolute name".into())),
                    }
                    continue;
                }
                Some("$TTL") => {
                    match toks.get(1).map(|t| parse_ttl(t)) {
                        Some(Ok(t)) if toks.len() == 2 => *default_ttl = t,
                        Some(Err(e)) => errors.push(err(e)),
                        _ => errors.push(err("$TTL takes one value".into())),
                    }
                    continue;
                }
                Some(d) if d.starts_with('$') => {
                    errors.push(err(format!(
                        "directive {d} is not supported in key zones ($ORIGIN and $TTL are)"
                    )));
                    continue;
                }
                _ => {}
            }
            match parse_record(toks, *blank_owner, origin_now, last_owner, *default_ttl) {
                Ok((owner, ttl, entry)) => {
                    *last_owner = Some(owner.clone());
                    slots.push((start, owner, ttl, entry));
                }
                Err(reason) => errors.push(err(reason)),
            }
        }
        // Lines other than keys are few (SOA, NS, glue): cloned rather than moved.
        let decoded = crate::zone::par_map(&slots, |(.., data)| match data {
            Data::Key(rtype, data) => parse_key(rtype, data),
            Data::Ready(e) => Ok((**e).clone()),
        });
        for ((line, owner, ttl, _), entry) in slots.into_iter().zip(decoded) {
            match entry {
                Ok(entry) => lines.push(Line {
                    line,
                    owner,
                    ttl,
                    entry,
                    written: None,
                }),
                Err(reason) => errors.push(ZoneError {
                    file: file.to_path_buf(),
                    line,
                    reason,
                }),
            }
        }
    }
}

/// Text split into logical records: comments stripped, parentheses joined. Yields (first
/// line number, tokens, whether the owner field was left blank); what is wrong with the
/// text's layout is collected in `errors`. Unless the text is the `last` piece, a record
/// still open at its end is not yielded: `consumed` is where it starts.
struct Logical<'a> {
    lines: std::iter::Enumerate<std::str::SplitInclusive<'a, char>>,
    file: &'a Path,
    errors: Vec<ZoneError>,
    first: usize,
    last: bool,
    // Bytes read, and bytes taken by whole records (and blank lines between them).
    pos: usize,
    consumed: usize,
    depth: usize,
    start: usize,
    // How many errors there were when the record being read began.
    errors_at_start: usize,
    blank_owner: bool,
    ended: bool,
}

impl<'a> Logical<'a> {
    fn new(text: &'a str, file: &'a Path, first: usize, last: bool) -> Self {
        Self {
            lines: text.split_inclusive('\n').enumerate(),
            file,
            errors: Vec::new(),
            first,
            last,
            pos: 0,
            consumed: 0,
            depth: 0,
            start: 0,
            errors_at_start: 0,
            blank_owner: false,
            ended: false,
        }
    }

    fn error(&mut self, line: usize, reason: String) {
        self.errors.push(ZoneError {
            file: self.file.to_path_buf(),
            line,
            reason,
        });
    }
}

impl<'a> Iterator for Logical<'a> {
    type Item = (usize, Vec<&'a str>, bool);

    fn next(&mut self) -> Option<Self::Item> {
        let mut tokens: Vec<&'a str> = Vec::new();
        while let Some((idx, with_end)) = self.lines.next() {
            self.pos += with_end.len();
            let raw = match with_end.strip_suffix('\n') {
                Some(r) => r.strip_suffix('\r').unwrap_or(r),
                None => with_end,
            };
            let lineno = self.first + idx;
            let line = match raw.find(';') {
                Some(p) => &raw[..p],
                None => raw,
            };
            if self.depth == 0 {
                if line.trim().is_empty() {
                    self.consumed = self.pos;
                    continue;
                }
                self.start = lineno;
                self.errors_at_start = self.errors.len();
                self.blank_owner = line.starts_with([' ', '\t']);
            }
            for word in line.split_whitespace() {
                let mut w = word;
                while let Some(rest) = w.strip_prefix('(') {
                    self.depth += 1;
                    w = rest;
                }
                let mut closes = 0;
                while let Some(rest) = w.strip_suffix(')') {
                    closes += 1;
                    w = rest;
                }
                if w.contains(['(', ')', '"']) {
                    self.error(lineno, format!("unexpected character in `{word}`"));
                } else if !w.is_empty() {
                    tokens.push(w);
                }
                if closes > self.depth {
                    self.error(lineno, "`)` without `(`".into());
                    self.depth = 0;
                } else {
                    self.depth -= closes;
                }
            }
            if self.depth == 0 {
                self.consumed = self.pos;
                if !tokens.is_empty() {
                    return Some((self.start, tokens, self.blank_owner));
                }
            }
        }
        if !self.last && self.depth > 0 {
            // Read again with the next piece, and what was found in it with it.
            self.errors.truncate(self.errors_at_start);
            self.depth = 0;
            return None;
        }
        if self.depth > 0 && !self.ended {
            self.error(self.start, "`(` is never closed".into());
        }
        self.ended = true;
        None
    }
}

fn name_from(s: &str, origin: &Name) -> Result<Name, String> {
    if s == "@" {
        return Ok(origin.clone());
    }
    let n = Name::from_ascii(s).map_err(|e| format!("`{s}` is not a domain name: {e}"))?;
    if n.is_fqdn() {
        Ok(n)
    } else {
        n.append_domain(origin)
            .map_err(|e| format!("`{s}` with origin {origin} is too long: {e}"))
    }
}

/// TTL as seconds or with s/m/h/d/w units (`1h30m`).
pub fn parse_ttl(s: &str) -> Result<u32, String> {
    let bad = || format!("`{s}` is not a TTL");
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u64::from(d)),
            );
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        total = total.saturating_add(num.take().ok_or_else(bad)?.saturating_mul(unit));
    }
    if num.is_some() {
        return Err(bad());
    }
    u32::try_from(total)
        .ok()
        .filter(|t| *t <= i32::MAX as u32)
        .ok_or_else(bad)
}

fn is_class(t: &str) -> bool {
    matches!(
        t.to_ascii_uppercase().as_str(),
        "IN" | "CH" | "HS" | "CS" | "NONE" | "ANY"
    ) || t.to_ascii_uppercase().starts_with("CLASS")
}

/// A record line's data: decoded, or a key record's tokens to decode ([`parse_key`]).
enum Data<'t> {
    Ready(Box<Entry>),
    Key(&'t str, &'t [&'t str]),
}

/// The data of a TPKEY line (type `rtype` as written).
fn parse_key(rtype: &str, data: &[&str]) -> Result<Entry, String> {
    if data.first() == Some(&"\\#") {
        let wire = record::parse_generic_rdata(data).map_err(|e| e.to_string())?;
        Ok(Entry::Key(
            KeyRecord::from_wire(&wire).map_err(|e| format!("TPKEY: {e}"))?,
        ))
    } else if rtype.eq_ignore_ascii_case(TPKEY_MNEMONIC) {
        Ok(Entry::Key(
            KeyRecord::from_presentation(data).map_err(|e| format!("TPKEY: {e}"))?,
        ))
    } else {
        Err(format!(
            "{rtype} data must be in RFC 3597 form (\\# len hex)"
        ))
    }
}

fn parse_record<'t>(
    toks: &'t [&'t str],
    blank_owner: bool,
    origin: &Name,
    last_owner: &Option<Name>,
    default_ttl: u32,
) -> Result<(Name, u32, Data<'t>), String> {
    let mut i = 0;
    let owner = if blank_owner {
        last_owner
            .clone()
            .ok_or("line starts with blank space but no owner came before")?
    } else {
        i = 1;
        name_from(toks[0], origin)?
    };
    let mut ttl = None;
    let mut class_seen = false;
    // TTL and class, in either order (RFC 1035 §5.1).
    for _ in 0..2 {
        let Some(t) = toks.get(i) else { break };
        if ttl.is_none() && t.starts_with(|c: char| c.is_ascii_digit()) {
            ttl = Some(parse_ttl(t)?);
            i += 1;
        } else if !class_seen && is_class(t) {
            if !t.eq_ignore_ascii_case("IN") {
                return Err(format!(
                    "class {t} is not supported (key zones are class IN)"
                ));
            }
            class_seen = true;
            i += 1;
        }
    }
    let rtype = toks.get(i).ok_or("record has no type")?;
    let data = &toks[i + 1..];
    let ttl = ttl.unwrap_or(default_ttl);
    let upper = rtype.to_ascii_uppercase();
    let entry = match upper.as_str() {
        "SOA" => Entry::Soa(parse_soa(data, origin)?),
        "NS" => match data {
            [n] => Entry::Ns(name_from(n, origin)?),
            _ => return Err("NS takes one name server name".into()),
        },
        "A" | "AAAA" => {
            let ip: std::net::IpAddr = match data {
                [a] => a
                    .parse()
                    .map_err(|_| format!("`{a}` is not an address for {rtype}"))?,
                _ => return Err(format!("{rtype} takes one address")),
            };
            if ip.is_ipv4() != (upper == "A") {
                return Err(format!("`{ip}` is not an address for {rtype}"));
            }
            Entry::Glue(ip)
        }
        t if t == TPKEY_MNEMONIC || t == format!("TYPE{TPKEY}") => {
            return Ok((owner, ttl, Data::Key(rtype, data)));
        }
        _ => {
            return Err(format!(
                "type {rtype} does not belong in a key zone (SOA, NS with its A/AAAA glue, and {TPKEY_MNEMONIC}/TYPE{TPKEY} do)"
            ));
        }
    };
    Ok((owner, ttl, Data::Ready(Box::new(entry))))
}

fn parse_soa(data: &[&str], origin: &Name) -> Result<SOA, String> {
    if data.len() != 7 {
        return Err(format!(
            "SOA takes 7 fields (mname rname serial refresh retry expire minimum), found {}",
            data.len()
        ));
    }
    let mname = name_from(data[0], origin)?;
    let rname = name_from(data[1], origin)?;
    let serial = data[2]
        .parse::<u32>()
        .map_err(|_| format!("SOA serial `{}` is not a 32-bit number", data[2]))?;
    let t = |k: usize, what: &str| {
        parse_ttl(data[k]).map_err(|_| format!("SOA {what} `{}` is not a time", data[k]))
    };
    Ok(SOA::new(
        mname,
        rname,
        serial,
        t(3, "refresh")? as i32,
        t(4, "retry")? as i32,
        t(5, "expire")? as i32,
        t(6, "minimum")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("example.com.").unwrap()
    }

    #[test]
    fn soa_ns_and_parentheses() {
        let text = "$TTL 1h\n@ IN SOA ks.example.com. hostmaster ( 1 ; serial\n 7200 3600 1209600 300 )\n  NS ks\n";
        let z = parse(Path::new("t.keys"), text, &origin()).unwrap();
        assert_eq!(z.lines.len(), 2);
        assert_eq!(z.lines[0].ttl, 3600);
        assert_eq!(z.lines[1].owner, origin());
        match &z.lines[1].entry {
            Entry::Ns(n) => assert_eq!(n.to_ascii(), "ks.example.com."),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = "@ SOA a b 1 2 3 4 5\nwww CH TPKEY 1\nwww IN MX 10 mail\nmail TYPE65300 \\# 3 0102\n(\n";
        let errs = parse(Path::new("z.keys"), text, &origin())
            .and_then(ParsedZone::strict)
            .unwrap_err();
        let s = errs.to_string();
        assert!(s.contains("z.keys:2: class CH"), "{s}");
        assert!(s.contains("z.keys:3: type MX does not belong"), "{s}");
        assert!(
            s.contains("z.keys:4: generic RDATA declares 3 bytes"),
            "{s}"
        );
        assert!(s.contains("z.keys:5: `(` is never closed"), "{s}");
    }

    /// A file read a few bytes at a time gives what its whole text gives: records split
    /// across pieces (parentheses over lines, CRLF ends), directives, blank owners, comments,
    /// errors with their lines, a `(` never closed; and a bad byte names its line.
    #[test]
    fn a_file_read_in_pieces_parses_as_its_whole_text() {
        let text = "$TTL 1h\r\n@ IN SOA ks.example.com. hostmaster ( 1 ; serial\n 7200 3600\n 1209600 300 )\n  NS ks\n\n; a comment\nks A 192.0.2.1\n$ORIGIN sub.example.com.\nwww IN MX 10 mail\nx ( A\n 192.0.2.7 ) junk)\nks AAAA ::1\n (\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.keys");
        let whole = parse(&path, text, &origin()).unwrap();
        std::fs::write(&path, text).unwrap();
        for piece in [1, 2, 3, 7, 16, 64, 4096] {
            let read = read_in_pieces(&path, &origin(), piece).unwrap();
            assert_eq!(shown(&read), shown(&whole), "pieces of {piece} bytes");
        }
        assert_eq!(whole.lines.len(), 4, "{:?}", shown(&whole));
        assert!(!whole.errors.is_empty());

        // A line with an error and no record, then a record still open at a piece's end.
        let stray = ")\nx ( A\n 192.0.2.7 )\n";
        std::fs::write(&path, stray).unwrap();
        let whole = parse(&path, stray, &origin()).unwrap();
        assert_eq!(whole.errors.len(), 1, "{:?}", shown(&whole));
        for piece in [1, 2, 8, 64] {
            let read = read_in_pieces(&path, &origin(), piece).unwrap();
            assert_eq!(shown(&read), shown(&whole), "pieces of {piece} bytes");
        }

        let mut bad = text.as_bytes().to_vec();
        bad.splice(0..0, b"; \xff\n".iter().copied());
        std::fs::write(&path, &bad).unwrap();
        let e = read_in_pieces(&path, &origin(), 3).unwrap_err().to_string();
        assert!(e.contains("z.keys:1: not valid UTF-8"), "{e}");
        let mut late = text.as_bytes().to_vec();
        late.extend_from_slice(b"; \xff\n");
        std::fs::write(&path, &late).unwrap();
        let e = read_in_pieces(&path, &origin(), 5).unwrap_err().to_string();
        assert!(e.contains("z.keys:15: not valid UTF-8"), "{e}");
    }

    /// Two readings of one text, lines and errors, for comparing.
    fn shown(z: &ParsedZone) -> (Vec<String>, Vec<String>) {
        let lines = z
            .lines
            .iter()
            .map(|l| format!("{} {} {} {:?}", l.line, l.owner, l.ttl, l.entry))
            .collect();
        (lines, z.errors.iter().map(|e| e.to_string()).collect())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Texts made of the parser's troublemakers (parentheses, quotes, comments, CRLF,
        /// directives, blank owners), read in pieces of any size: the same lines and errors
        /// as the whole text.
        #[test]
        fn any_text_read_in_pieces_parses_as_a_whole(
            words in proptest::collection::vec(0usize..16, 0..60),
            piece in 1u64..24,
        ) {
            const WORDS: [&str; 16] = [
                "(", ")", "\n", "\r\n", "; c", " ", "x", "$TTL 60", "IN", "A", "192.0.2.1",
                "NS", "ks", "\"", "\n@ SOA a b 1 2 3 4 5", "\n  ",
            ];
            let text: String = words.iter().map(|&w| WORDS[w]).collect::<Vec<_>>().join(" ");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.keys");
            std::fs::write(&path, &text).unwrap();
            let whole = parse(&path, &text, &origin()).unwrap();
            let read = read_in_pieces(&path, &origin(), piece).unwrap();
            proptest::prop_assert_eq!(shown(&read), shown(&whole), "{:?}", text);
        }
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("1h30m").unwrap(), 5400);
        assert_eq!(parse_ttl("86400").unwrap(), 86400);
        assert!(parse_ttl("1x").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("5").is_ok());
    }
}
