//! Plain MAC lists (text or CSV, one MAC per line, an optional label column), built for lists of
//! tens of millions of lines.
//!
//! Pass 1 ([`scan`]) splits the file at line boundaries, one chunk per core, and parses each line
//! into a bare `u64` (12 bytes of text become 8 bytes, no allocation per line). The values are
//! radix-sorted per chunk and merged ([`repeated_or_invalid`]) to find MACs that repeat or are
//! invalid. Pass 2 ([`collect`]) re-reads only the lines whose MAC is [`Wanted`], to give them a
//! line number and label. A clean list costs one parse and one sort.

use macpool_core::Mac;
use macpool_core::conflict::{Owner, Seen, Sighting};

use crate::{Diagnostic, Parsed};

const fn hex_table() -> [u8; 256] {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
}

static HEX: [u8; 256] = hex_table();

#[inline]
fn hex_digits(f: &[u8], positions: &[usize]) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u8;
    for &i in positions {
        let d = HEX[f[i] as usize];
        bad |= d;
        v = (v << 4) | u64::from(d & 0x0F);
    }
    (bad & 0xF0 == 0).then_some(v)
}

/// The three common spellings at fixed positions, without allocation. Anything else goes to
/// [`Mac::parse`], which also explains what is wrong.
#[inline]
pub(crate) fn fast_mac(f: &[u8]) -> Option<u64> {
    match f.len() {
        17 => {
            let s = f[2];
            if (s == b':' || s == b'-') && f[5] == s && f[8] == s && f[11] == s && f[14] == s {
                hex_digits(f, &[0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16])
            } else {
                None
            }
        }
        12 => hex_digits(f, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        14 if f[4] == b'.' && f[9] == b'.' => {
            hex_digits(f, &[0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13])
        }
        _ => None,
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b
        && first.is_ascii_whitespace()
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && last.is_ascii_whitespace()
    {
        b = rest;
    }
    b
}

fn unquote(b: &[u8]) -> &[u8] {
    let b = trim(b);
    match b {
        [b'"', inner @ .., b'"'] | [b'\'', inner @ .., b'\''] => trim(inner),
        _ => b,
    }
}

/// Splits at the first field separator: `,` `;` tab or space.
fn split_field(line: &[u8]) -> (&[u8], &[u8]) {
    match line
        .iter()
        .position(|b| matches!(b, b',' | b';' | b'\t' | b' '))
    {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

fn slow_mac(f: &[u8]) -> Result<u64, String> {
    match std::str::from_utf8(f) {
        Ok(s) => Mac::parse(s).map(Mac::to_u64).map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "'{}' is not text (not UTF-8)",
            String::from_utf8_lossy(f)
        )),
    }
}

fn mac_of(f: &[u8]) -> Result<u64, String> {
    fast_mac(f).map_or_else(|| slow_mac(f), Ok)
}

pub(crate) enum Line<'a> {
    Blank,
    Mac {
        value: u64,
        /// `None`: the label is every field of the line that is not a MAC ([`label_of`]).
        label: Option<&'a [u8]>,
        /// The text after the MAC's field, where more MACs may be ([`more_macs`]).
        more: &'a [u8],
    },
    Bad {
        error: String,
        looks_like_header: bool,
    },
}

/// The first MAC-shaped field of `b` and the text after it.
fn first_mac_field(mut b: &[u8]) -> Option<(u64, &[u8])> {
    while !b.is_empty() {
        let (field, rest) = split_field(b);
        if let Some(v) = fast_mac(unquote(field)) {
            return Some((v, rest));
        }
        b = rest;
    }
    None
}

/// Every further MAC of a line (a CSV row may list several adapters), from [`Line::Mac`]'s `more`.
pub(crate) fn more_macs(mut more: &[u8]) -> impl Iterator<Item = u64> + '_ {
    std::iter::from_fn(move || {
        let (v, rest) = first_mac_field(more)?;
        more = rest;
        Some(v)
    })
}

/// One line: `MAC`, `MAC<sep>label…` or `label<sep>MAC`, and any number of further MAC fields;
/// `#` starts a comment line.
pub(crate) fn parse_line(raw: &[u8]) -> Line<'_> {
    let line = trim(raw);
    if line.is_empty() || line[0] == b'#' {
        return Line::Blank;
    }
    if let Some(value) = fast_mac(line) {
        return Line::Mac {
            value,
            label: Some(&[]),
            more: &[],
        };
    }
    let (first, rest) = split_field(line);
    let first_err = match mac_of(unquote(first)) {
        Ok(value) => {
            return Line::Mac {
                value,
                label: Some(unquote(rest)),
                more: rest,
            };
        }
        Err(e) => e,
    };
    let (second, after) = split_field(trim(rest));
    if !second.is_empty()
        && let Some(value) = fast_mac(unquote(second))
    {
        return Line::Mac {
            value,
            label: Some(unquote(first)),
            more: after,
        };
    }
    if let Some((value, more)) = first_mac_field(after) {
        return Line::Mac {
            value,
            label: None,
            more,
        };
    }
    Line::Bad {
        error: first_err,
        looks_like_header: line
            .iter()
            .any(|b| b.is_ascii_alphabetic() && HEX[*b as usize] == 0xFF),
    }
}

/// The label pass 2 gives the MACs of a line: the field beside a lone MAC, as before; for a line
/// with several MACs, its other fields, space-separated.
fn label_of(line: &[u8], label: Option<&[u8]>, more: &[u8]) -> Option<String> {
    match label {
        Some(l) if more_macs(more).next().is_none() => {
            (!l.is_empty()).then(|| String::from_utf8_lossy(l).into_owned())
        }
        _ => {
            let mut out = String::new();
            let mut rest = trim(line);
            while !rest.is_empty() {
                let (field, after) = split_field(rest);
                let field = unquote(field);
                if !field.is_empty() && fast_mac(field).is_none() {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(&String::from_utf8_lossy(field));
                }
                rest = after;
            }
            (!out.is_empty()).then_some(out)
        }
    }
}

/// Splits `bytes` into at most `n` chunks that end at line boundaries.
fn chunks(bytes: &[u8], n: usize) -> Vec<(usize, &[u8])> {
    let n = n.max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..=n {
        if start >= bytes.len() {
            break;
        }
        let target = (bytes.len() * k / n).max(start);
        let end = if k == n || target >= bytes.len() {
            bytes.len()
        } else {
            memchr::memchr(b'\n', &bytes[target..]).map_or(bytes.len(), |i| target + i + 1)
        };
        out.push((start, &bytes[start..end]));
        start = end;
    }
    out
}

/// A byte offset is remembered every this many lines, so pass 2 finds a line's text without
/// counting newlines from the start. At 1,024, finding the ~23,000 lines of a list with 11,000
/// repeated MACs counted as many newlines as the whole file holds; at 64 the index costs one
/// `usize` per 64 lines (1.2 MB for ten million).
const LINE_INDEX_EVERY: u64 = 64;

/// Pass 1's result for one chunk of a list. `values` are in line order; the lines that gave no
/// value are listed in `skipped`, so the line of `values[i]` can be worked out without
/// re-reading the text.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Byte offset of the chunk in the file's text.
    start: usize,
    len: usize,
    values: Vec<u64>,
    /// Chunk-relative (1-based) numbers of the lines that yielded no value, ascending.
    skipped: Vec<u64>,
    /// Chunk-relative numbers of the lines that yielded one more value, once per extra value.
    extra: Vec<u64>,
    /// `line_index[k]` is the chunk-relative byte offset of line `(k + 1) * LINE_INDEX_EVERY`.
    line_index: Vec<usize>,
    lines: u64,
    bad: u64,
    diagnostics: Vec<(u64, String)>,
}

/// Exactly `xx:xx:xx:xx:xx:xx` or `xx-xx-xx-xx-xx-xx` (the shape of almost every line of a big
/// list), checked and decoded without searching for the line end first.
#[inline]
fn fast17(f: &[u8; 17]) -> Option<u64> {
    let s = f[2];
    if (s != b':' && s != b'-') || f[5] != s || f[8] != s || f[11] != s || f[14] != s {
        return None;
    }
    let d = [
        HEX[f[0] as usize],
        HEX[f[1] as usize],
        HEX[f[3] as usize],
        HEX[f[4] as usize],
        HEX[f[6] as usize],
        HEX[f[7] as usize],
        HEX[f[9] as usize],
        HEX[f[10] as usize],
        HEX[f[12] as usize],
        HEX[f[13] as usize],
        HEX[f[15] as usize],
        HEX[f[16] as usize],
    ];
    if d.iter().fold(0u8, |a, b| a | b) & 0xF0 != 0 {
        return None;
    }
    Some(d.iter().fold(0u64, |v, x| (v << 4) | u64::from(*x)))
}

fn scan_chunk(start: usize, chunk: &[u8], first_chunk: bool, max: usize) -> Chunk {
    let mut c = Chunk {
        start,
        len: chunk.len(),
        values: Vec::with_capacity(chunk.len() / 18 + 1),
        ..Chunk::default()
    };
    advise_huge_pages(&mut c.values);
    let mut content_seen = !first_chunk;
    let mut pos = 0;
    while pos < chunk.len() {
        c.lines += 1;
        if c.lines.is_multiple_of(LINE_INDEX_EVERY) {
            c.line_index.push(pos);
        }
        if let Some(head) = chunk.get(pos..pos + 19) {
            let head: &[u8; 17] = head[..17].try_into().expect("17 bytes");
            let eol = match (chunk[pos + 17], chunk[pos + 18]) {
                (b'\n', _) => 18,
                (b'\r', b'\n') => 19,
                _ => 0,
            };
            if eol > 0
                && let Some(v) = fast17(head)
            {
                c.values.push(v);
                content_seen = true;
                pos += eol;
                continue;
            }
        }
        let end = memchr::memchr(b'\n', &chunk[pos..]).map_or(chunk.len(), |i| pos + i);
        let line = &chunk[pos..end];
        pos = end + 1;
        match parse_line(line) {
            Line::Blank => c.skipped.push(c.lines),
            Line::Mac { value, more, .. } => {
                content_seen = true;
                c.values.push(value);
                for v in more_macs(more) {
                    c.values.push(v);
                    c.extra.push(c.lines);
                }
            }
            Line::Bad {
                error,
                looks_like_header,
            } => {
                c.skipped.push(c.lines);
                // The first line of a CSV may name its columns.
                if !content_seen && looks_like_header {
                    content_seen = true;
                    continue;
                }
                content_seen = true;
                c.bad += 1;
                if c.diagnostics.len() < max {
                    c.diagnostics.push((c.lines, error));
                }
            }
        }
    }
    c
}

/// The result of pass 1 over one list: its chunks, kept for pass 2.
#[derive(Debug, Default)]
pub struct Scan {
    chunks: Vec<Chunk>,
    max_diagnostics: usize,
}

impl Scan {
    pub fn records(&self) -> u64 {
        self.chunks.iter().map(|c| c.values.len() as u64).sum()
    }

    pub fn lines(&self) -> u64 {
        self.chunks.iter().map(|c| c.lines).sum()
    }

    /// The parsed values, chunk by chunk, for [`repeated_or_invalid`].
    pub fn values(&self) -> impl Iterator<Item = &[u64]> {
        self.chunks.iter().map(|c| c.values.as_slice())
    }

    /// Counts and diagnostics (line numbers made absolute); the sightings come from [`collect`].
    pub fn parsed(&self) -> Parsed {
        let mut p = Parsed::default();
        let mut base = 0;
        for c in &self.chunks {
            for (line, error) in &c.diagnostics {
                if p.diagnostics.len() < self.max_diagnostics {
                    p.diagnostics.push(Diagnostic::at(
                        format!("line {}", base + line),
                        error.clone(),
                    ));
                }
            }
            base += c.lines;
            p.bad_records += c.bad;
            p.records += c.values.len() as u64;
        }
        if p.records == 0 && p.bad_records > 0 {
            p.unreadable = Some(
                "no line holds a MAC address: not a MAC list, or every line is malformed".into(),
            );
        }
        p
    }
}

/// Pass 1: parses every line on `threads` threads.
pub fn scan(bytes: &[u8], threads: usize, max_diagnostics: usize) -> Scan {
    // a small file is not worth a thread
    let threads = if bytes.len() < 1 << 20 { 1 } else { threads };
    let parts = chunks(bytes, threads);
    let chunks = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .enumerate()
            .skip(1)
            .map(|(_, &(start, part))| {
                scope.spawn(move || scan_chunk(start, part, false, max_diagnostics))
            })
            .collect();
        let mut out: Vec<Chunk> = parts
            .first()
            .map(|&(start, part)| scan_chunk(start, part, true, max_diagnostics))
            .into_iter()
            .collect();
        out.extend(handles.into_iter().map(|h| h.join().unwrap_or_default()));
        out
    });
    Scan {
        chunks,
        max_diagnostics,
    }
}

/// Asks for transparent huge pages on a big buffer not yet touched: on virtual machines every 4 KiB
/// page's first touch is expensive, and these buffers hold tens of millions of values.
fn advise_huge_pages(v: &mut Vec<u64>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * std::mem::size_of::<u64>();
        if bytes < 4 * HUGE {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(HUGE);
        let end = (start + bytes) / HUGE * HUGE;
        if end > aligned {
            // SAFETY: the range lies inside the vector's own allocation; MADV_HUGEPAGE only changes
            // how the kernel backs it, never its contents.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

fn is_invalid(v: u64) -> bool {
    v == 0 || (v >> 40) & 1 == 1
}

/// Partitions are this many bits of a hash: 1024 buckets of about ten thousand values (for ten
/// million), each small enough to find its repeats inside the CPU cache.
const BUCKET_BITS: u32 = 10;

#[inline]
fn bucket(v: u64) -> usize {
    (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKET_BITS)) as usize
}

/// One worker's share of the values, scattered by bucket.
struct Partitioned {
    values: Vec<u64>,
    /// `starts[b]..starts[b + 1]` is bucket `b`.
    starts: Vec<usize>,
}

fn partition(slices: &[&[u64]]) -> Partitioned {
    let buckets = 1 << BUCKET_BITS;
    let mut counts = vec![0usize; buckets + 1];
    for s in slices {
        for &v in *s {
            counts[bucket(v) + 1] += 1;
        }
    }
    for b in 0..buckets {
        counts[b + 1] += counts[b];
    }
    let mut next = counts.clone();
    let total = counts[buckets];
    let mut values = vec![0u64; total];
    advise_huge_pages(&mut values);
    for s in slices {
        for &v in *s {
            let b = bucket(v);
            values[next[b]] = v;
            next[b] += 1;
        }
    }
    Partitioned {
        values,
        starts: counts,
    }
}

/// Marks a table slot whose value was seen twice (above the 48 bits a MAC uses).
const SEEN_TWICE: u64 = 1 << 62;
const EMPTY: u64 = u64::MAX;

/// Repeats within one bucket (gathered from every worker's partition), with an open-addressing
/// table small enough to stay in cache; `table` is reused from bucket to bucket.
fn bucket_repeats(parts: &[Partitioned], b: usize, table: &mut Vec<u64>, out: &mut Vec<u64>) {
    let n: usize = parts.iter().map(|p| p.starts[b + 1] - p.starts[b]).sum();
    let cap = (n + n / 2).next_power_of_two().max(16);
    let shift = 64 - cap.trailing_zeros();
    table.clear();
    table.resize(cap, EMPTY);
    for p in parts {
        for &v in &p.values[p.starts[b]..p.starts[b + 1]] {
            // a different multiplier from `bucket`, whose high bits are equal within the bucket
            let mut i = (v.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> shift) as usize;
            loop {
                let slot = table[i];
                if slot == EMPTY {
                    table[i] = v;
                    if is_invalid(v) {
                        out.push(v);
                    }
                    break;
                }
                if slot & !SEEN_TWICE == v {
                    if slot & SEEN_TWICE == 0 {
                        table[i] = v | SEEN_TWICE;
                        if !is_invalid(v) {
                            out.push(v);
                        }
                    }
                    break;
                }
                i = (i + 1) & (cap - 1);
            }
        }
    }
}

/// The MACs that occur at least twice across all `slices`, or are not unicast, ascending.
/// Instead of sorting everything, values are hashed into buckets (one pass per worker) and each
/// bucket is checked on its own.
pub fn repeated_or_invalid<'a>(
    slices: impl IntoIterator<Item = &'a [u64]>,
    threads: usize,
) -> Vec<u64> {
    let slices: Vec<&[u64]> = slices.into_iter().collect();
    let total: usize = slices.iter().map(|s| s.len()).sum();
    if total < 1 << 16 {
        by_sorting(&slices)
    } else {
        by_buckets(&slices, total, threads)
    }
}

/// Small inputs: sorted outright, without threads or buckets.
fn by_sorting(slices: &[&[u64]]) -> Vec<u64> {
    let mut all = slices.concat();
    all.sort_unstable();
    all.chunk_by(|a, b| a == b)
        .filter(|run| run.len() >= 2 || is_invalid(run[0]))
        .map(|run| run[0])
        .collect()
}

fn by_buckets(slices: &[&[u64]], total: usize, threads: usize) -> Vec<u64> {
    let workers = threads.max(1).min(total / 65_536 + 1);
    // Deal the slices to workers, largest first, onto the lightest.
    let mut order: Vec<&[u64]> = slices.to_vec();
    order.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut shares: Vec<Vec<&[u64]>> = vec![Vec::new(); workers];
    let mut loads = vec![0usize; workers];
    for s in order {
        let w = (0..workers).min_by_key(|&w| loads[w]).unwrap_or(0);
        loads[w] += s.len();
        shares[w].push(s);
    }
    let parts: Vec<Partitioned> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .iter()
            .skip(1)
            .map(|sh| scope.spawn(move || partition(sh)))
            .collect();
        let mut parts = vec![partition(&shares[0])];
        parts.extend(handles.into_iter().filter_map(|h| h.join().ok()));
        parts
    });
    let buckets = 1usize << BUCKET_BITS;
    let per = buckets.div_ceil(workers);
    let found: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let parts = &parts;
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let (mut table, mut out) = (Vec::new(), Vec::new());
                    for b in w * per..((w + 1) * per).min(buckets) {
                        bucket_repeats(parts, b, &mut table, &mut out);
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut out: Vec<u64> = found.into_iter().flatten().collect();
    out.sort_unstable();
    out
}

/// The set of MACs whose lines pass 2 must find. A bit filter of at least 64 bits per wanted
/// MAC (64 Ki bits to 8 Mi bits, so at most 1 MiB) answers almost every lookup of the ten
/// million without touching the sorted list: a fixed 64 Ki bits let a third of them through
/// to a binary search once 11,000 MACs were wanted.
pub struct Wanted {
    sorted: Vec<u64>,
    filter: Vec<u64>,
    /// 64 minus the filter's size in bits, as a power of two.
    shift: u32,
}

impl Wanted {
    #[inline]
    fn bit(&self, v: u64) -> usize {
        (v.wrapping_mul(0x9FB2_1C65_1E98_DF25) >> self.shift) as usize
    }

    pub fn new(mut values: Vec<u64>) -> Wanted {
        values.sort_unstable();
        values.dedup();
        let bits = (values.len() * 64)
            .next_power_of_two()
            .clamp(1 << 16, 1 << 23);
        let mut wanted = Wanted {
            sorted: Vec::new(),
            filter: vec![0u64; bits / 64],
            shift: 64 - bits.trailing_zeros(),
        };
        for &v in &values {
            let b = wanted.bit(v);
            wanted.filter[b / 64] |= 1 << (b % 64);
        }
        wanted.sorted = values;
        wanted
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    #[inline]
    pub fn contains(&self, v: u64) -> bool {
        let b = self.bit(v);
        self.filter[b / 64] & (1 << (b % 64)) != 0 && self.sorted.binary_search(&v).is_ok()
    }
}

/// The text of chunk-relative line `line` (1-based), found from the nearest indexed line.
fn line_text<'t>(chunk: &'t [u8], index: &[usize], line: u64) -> &'t [u8] {
    let k = (line / LINE_INDEX_EVERY) as usize;
    let (mut at, mut n) = match k.checked_sub(1).and_then(|i| index.get(i)) {
        Some(&off) => (off, k as u64 * LINE_INDEX_EVERY),
        None => (0, 1),
    };
    while n < line {
        match memchr::memchr(b'\n', &chunk[at.min(chunk.len())..]) {
            Some(i) => at += i + 1,
            None => return &[],
        }
        n += 1;
    }
    let rest = &chunk[at.min(chunk.len())..];
    &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())]
}

/// Pass 2: a sighting for every value that is wanted, with its line number and label. It walks
/// the values kept from pass 1 (one thread per chunk), not the text; only the lines it reports
/// are looked up.
pub fn collect(source: &str, bytes: &[u8], scan: &Scan, wanted: &Wanted) -> Vec<Sighting> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut bases = Vec::with_capacity(scan.chunks.len());
    let mut base = 0u64;
    for c in &scan.chunks {
        bases.push(base);
        base += c.lines;
    }
    if let [only] = scan.chunks.as_slice() {
        return collect_chunk(source, bytes, only, 0, wanted);
    }
    let found: Vec<Vec<Sighting>> = std::thread::scope(|scope| {
        let handles: Vec<_> = scan
            .chunks
            .iter()
            .zip(bases)
            .map(|(c, base)| scope.spawn(move || collect_chunk(source, bytes, c, base, wanted)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    found.into_iter().flatten().collect()
}

fn collect_chunk(
    source: &str,
    bytes: &[u8],
    c: &Chunk,
    base: u64,
    wanted: &Wanted,
) -> Vec<Sighting> {
    let mut out = Vec::new();
    let text = bytes.get(c.start..c.start + c.len).unwrap_or(&[]);
    let mut skipped = c.skipped.iter().peekable();
    let mut extra = c.extra.iter().peekable();
    let mut line = 0u64;
    let mut same_line = false;
    for &v in &c.values {
        if !same_line {
            line += 1;
            while skipped.next_if(|&&s| s == line).is_some() {
                line += 1;
            }
        }
        // the next value comes from this line too
        same_line = extra.next_if(|&&e| e == line).is_some();
        if !wanted.contains(v) {
            continue;
        }
        let Some(mac) = Mac::from_u64(v) else {
            continue;
        };
        let raw = line_text(text, &c.line_index, line);
        let label = match parse_line(raw) {
            Line::Mac { label, more, .. } => label_of(raw, label, more),
            _ => None,
        };
        out.push(Sighting {
            mac,
            dynamic: None,
            seen: Seen::Listed { label },
            owner: Owner {
                source: source.to_string(),
                location: Some(format!("line {}", base + line)),
                ..Owner::default()
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(s: &str) -> u64 {
        Mac::parse(s).unwrap().to_u64()
    }

    #[test]
    fn lines_with_labels_either_side_quotes_and_comments() {
        let cases: [(&str, Option<(&str, &str)>); 8] = [
            ("00:15:5d:01:85:11", Some(("00155D018511", ""))),
            ("  00-15-5D-01-85-11\r", Some(("00155D018511", ""))),
            ("0015.5d01.8511,desk-01", Some(("00155D018511", "desk-01"))),
            (
                "\"00:15:5d:01:85:11\";\"desk 01\"",
                Some(("00155D018511", "desk 01")),
            ),
            ("desk-01,00155D018511", Some(("00155D018511", "desk-01"))),
            (
                "00155D018511\tdesk 01 (HV1)",
                Some(("00155D018511", "desk 01 (HV1)")),
            ),
            ("# comment", None),
            ("", None),
        ];
        for (line, expected) in cases {
            match (parse_line(line.as_bytes()), expected) {
                (
                    Line::Mac {
                        value: v, label, ..
                    },
                    Some((m, l)),
                ) => {
                    assert_eq!(v, value(m), "{line:?}");
                    assert_eq!(label, Some(l.as_bytes()), "{line:?}");
                }
                (Line::Blank, None) => {}
                _ => panic!("{line:?} parsed wrongly"),
            }
        }
    }

    #[test]
    fn bad_lines_say_why_and_a_header_is_recognised() {
        let Line::Bad {
            error,
            looks_like_header,
        } = parse_line(b"00:15:5g:01:85:11,x")
        else {
            panic!()
        };
        assert!(error.contains("bad digit 'g' at position 8"), "{error}");
        assert!(looks_like_header, "the label has a non-hex letter");
        let Line::Bad {
            looks_like_header, ..
        } = parse_line(b"00:15:5d:01:85")
        else {
            panic!()
        };
        assert!(!looks_like_header);
        let s = scan(b"mac,label\n00:15:5d:01:85:11,a\nmac,label\n", 1, 10);
        let p = s.parsed();
        assert_eq!(p.records, 1);
        assert_eq!(p.bad_records, 1, "only the first line may be a header");
        assert_eq!(p.diagnostics[0].location.as_deref(), Some("line 3"));
    }

    fn list_text(n: u64, bad_every: u64) -> String {
        let mut text = String::new();
        for i in 0..n {
            match i % bad_every {
                5 => text.push_str("garbage\n"),
                7 => text.push_str("\r\n"),
                9 => text.push_str(&format!(
                    "{}\r\n",
                    Mac::from_u64(0x0215_5D00_0000 + i)
                        .unwrap()
                        .display(macpool_core::MacFormat::Unix)
                )),
                _ => text.push_str(&format!(
                    "{}\n",
                    Mac::from_u64(0x0215_5D00_0000 + i).unwrap()
                )),
            }
        }
        text
    }

    #[test]
    fn line_numbers_survive_the_split_into_chunks() {
        let text = list_text(5000, 97);
        let one = scan(text.as_bytes(), 1, 100);
        let flat = |s: &Scan| s.values().flatten().copied().collect::<Vec<_>>();
        for threads in [2, 3, 7] {
            let many = scan(text.as_bytes(), threads, 100);
            assert_eq!(flat(&many), flat(&one));
            assert_eq!(many.parsed().diagnostics, one.parsed().diagnostics);
            assert_eq!(many.lines(), 5000);
        }
        let d = one.parsed().diagnostics;
        assert_eq!(d[0].location.as_deref(), Some("line 6"));
        assert_eq!(d[1].location.as_deref(), Some("line 103"));
        assert_eq!(one.parsed().bad_records, 52);
    }

    #[test]
    fn diagnostics_are_capped_but_counted() {
        let text = "12345\n".repeat(50);
        let p = scan(text.as_bytes(), 2, 5).parsed();
        assert_eq!(p.diagnostics.len(), 5);
        assert_eq!(p.bad_records, 50);
        assert!(p.unreadable.is_some());
    }

    #[test]
    fn repeats_and_invalid_are_found_across_slices() {
        let v: Vec<u64> = (0..200_000u64)
            .map(|i| 0x0215_5D00_0000 + i * 7919 % 200_000)
            .collect();
        let extra = [
            0x0215_5D00_0000 + 42,
            0x0215_5D00_0000 + 199_999,
            0x0100_5E00_0001,
            0,
        ];
        let got = repeated_or_invalid([&v[..100_000], &v[100_000..], &extra[..]], 2);
        assert_eq!(
            got,
            vec![
                0,
                0x0100_5E00_0001,
                0x0215_5D00_0000 + 42,
                0x0215_5D00_0000 + 199_999
            ]
        );
    }

    #[test]
    fn collect_finds_only_wanted_lines_with_numbers_and_labels() {
        let text = b"00:15:5d:01:85:11,a\n00:15:5d:01:85:12,b\n\n00155d018511 c\n";
        let s = scan(text, 2, 10);
        let wanted = Wanted::new(vec![value("00155D018511")]);
        let got = collect("list.txt", text, &s, &wanted);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].owner.location.as_deref(), Some("line 1"));
        assert_eq!(
            got[0].seen,
            Seen::Listed {
                label: Some("a".into())
            }
        );
        assert_eq!(got[1].owner.location.as_deref(), Some("line 4"));
        assert_eq!(
            got[1].seen,
            Seen::Listed {
                label: Some("c".into())
            }
        );
    }

    #[test]
    fn every_mac_field_of_a_line_is_read_with_its_line_number() {
        let text = b"host,nic1,nic2\ndesk-01,00:15:5d:01:85:11,\"00-15-5D-01-85-12\",rack 4\n\n00155d018512;00155d018513\nHV1 desk-02 0015.5d01.8514\n00:15:5d:01:85:14\n";
        for threads in [1, 3] {
            let s = scan(text, threads, 10);
            assert_eq!(s.records(), 6, "every MAC of every line");
            assert_eq!(s.parsed().bad_records, 0, "the header is not a bad record");
            let all: Vec<u64> = s.values().flatten().copied().collect();
            let got = collect("l", text, &s, &Wanted::new(all));
            let seen: Vec<(String, &str, Option<&str>)> = got
                .iter()
                .map(|g| {
                    let Seen::Listed { label } = &g.seen else {
                        panic!()
                    };
                    (
                        g.mac.to_string(),
                        g.owner.location.as_deref().unwrap(),
                        label.as_deref(),
                    )
                })
                .collect();
            assert_eq!(
                seen,
                [
                    ("00-15-5D-01-85-11".into(), "line 2", Some("desk-01 rack 4")),
                    ("00-15-5D-01-85-12".into(), "line 2", Some("desk-01 rack 4")),
                    ("00-15-5D-01-85-12".into(), "line 4", None),
                    ("00-15-5D-01-85-13".into(), "line 4", None),
                    ("00-15-5D-01-85-14".into(), "line 5", Some("HV1 desk-02")),
                    ("00-15-5D-01-85-14".into(), "line 6", None),
                ]
            );
        }
    }

    #[test]
    fn collect_reaches_lines_past_the_line_index() {
        let text = list_text(5000, 97);
        let s = scan(text.as_bytes(), 3, 10);
        let all: Vec<u64> = s.values().flatten().copied().collect();
        let got = collect("l", text.as_bytes(), &s, &Wanted::new(all.clone()));
        assert_eq!(got.len(), all.len());
        let lines: Vec<&str> = text.split('\n').collect();
        for g in &got {
            let n: usize = g.owner.location.as_deref().unwrap()[5..].parse().unwrap();
            assert_eq!(Mac::parse(lines[n - 1]).unwrap(), g.mac, "line {n}");
        }
    }

    proptest! {
        #[test]
        fn fast_parser_agrees_with_mac_parse(v in 0..=macpool_core::mac::MAC_MAX, f in 0usize..4, lower in any::<bool>()) {
            let mut s = Mac::from_u64(v).unwrap().display(macpool_core::MacFormat::ALL[f]).to_string();
            if lower { s = s.to_lowercase(); }
            prop_assert_eq!(fast_mac(s.as_bytes()), Some(v));
            if s.len() == 17 {
                prop_assert_eq!(fast17(s.as_bytes().try_into().unwrap()), Some(v));
            }
        }

        #[test]
        fn fast_parsers_never_accept_what_mac_parse_rejects(s in "[0-9a-fA-FgG:.\\- ]{10,18}") {
            if let Some(v) = fast_mac(s.as_bytes()) {
                prop_assert_eq!(Mac::parse(&s).map(Mac::to_u64), Ok(v));
            }
            if let Ok(b) = <&[u8; 17]>::try_from(s.as_bytes())
                && let Some(v) = fast17(b)
            {
                prop_assert_eq!(Mac::parse(&s).map(Mac::to_u64), Ok(v));
            }
        }

        #[test]
        fn repeated_matches_a_counting_reference(v in proptest::collection::vec(0u64..600, 0..1500), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4), threads in 1usize..4) {
            let mut counts = std::collections::BTreeMap::new();
            for x in &v { *counts.entry(*x).or_insert(0) += 1; }
            let expected: Vec<u64> = counts.into_iter().filter(|(x, n)| *n >= 2 || is_invalid(*x)).map(|(x, _)| x).collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(v.len() + 1)).collect();
            at.push(0);
            at.push(v.len());
            at.sort();
            let slices: Vec<&[u64]> = at.windows(2).map(|w| &v[w[0]..w[1]]).collect();
            prop_assert_eq!(&by_buckets(&slices, v.len(), threads), &expected);
            prop_assert_eq!(&by_sorting(&slices), &expected);
            prop_assert_eq!(repeated_or_invalid(slices, threads), expected);
        }

        #[test]
        fn collect_line_numbers_match_the_text(lines in proptest::collection::vec(prop_oneof![
            (0u64..20).prop_map(|i| Mac::from_u64(0x0215_5D00_0000 + i).unwrap().to_string()),
            (0u64..20).prop_map(|i| format!("{},label{i}", Mac::from_u64(0x0215_5D00_0000 + i).unwrap().display(macpool_core::MacFormat::Cisco))),
            Just(String::new()),
            Just("# c".to_string()),
            Just("bad".to_string()),
        ], 0..200), threads in 1usize..4, crlf in any::<bool>()) {
            let text = lines.join(if crlf { "\r\n" } else { "\n" });
            let s = scan(text.as_bytes(), threads, 10);
            let wanted: Vec<u64> = s.values().flatten().copied().collect();
            let got = collect("p", text.as_bytes(), &s, &Wanted::new(wanted.clone()));
            prop_assert_eq!(got.len(), wanted.len());
            for g in got {
                let n: usize = g.owner.location.as_deref().unwrap()[5..].parse().unwrap();
                let line = lines[n - 1].as_str();
                prop_assert!(line.to_lowercase().starts_with(&g.mac.display(macpool_core::MacFormat::Ieee).to_string().to_lowercase())
                    || line.starts_with(&g.mac.display(macpool_core::MacFormat::Cisco).to_string()), "line {} = {:?} vs {}", n, line, g.mac);
            }
        }

        #[test]
        fn scan_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), threads in 1usize..4) {
            let s = scan(&bytes, threads, 10);
            prop_assert!(s.parsed().diagnostics.len() <= 10);
            let all: Vec<u64> = s.values().flatten().copied().collect();
            let got = collect("x", &bytes, &s, &Wanted::new(all.clone()));
            prop_assert_eq!(got.len(), all.len());
        }
    }
}
