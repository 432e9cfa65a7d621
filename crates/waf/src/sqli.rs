//! SQL injection detection by tokenizing, in the spirit of libinjection.
//!
//! A value is tokenized as SQL three ways: as it is (a numeric or bare
//! context: `id=1 or 1=1`), and as if it continued a single- or a
//! double-quoted string that the application opened (`name='<value>'`), in
//! which case the text up to the first such quote is the string's content and
//! the quote is a *break*. The token stream is then checked for the shapes an
//! injection needs to do anything: a break (or a leading number) followed by
//! a boolean operator and an expression that is a comparison or a constant
//! and ends where a statement can end (`' or 1=1--`), a break followed by a
//! comment, a comparison, a concatenated function call or subquery, a
//! `union [all] select` followed by a select list, a stacked statement after
//! `;`. Words alone never match: "select the best option or 2" has no break
//! and no anchored number, and "O'Brien" breaks into a plain word.
//!
//! The work is linear in the input: one tokenizing pass per context, and the
//! checks look at a bounded number of tokens from each starting point, except
//! for parenthesised groups, which are skipped with a counter, not recursion.

/// The most tokens a single shape check reads ahead from where it starts.
const MAX_LOOKAHEAD_TOKENS: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A word: identifier, keyword or function name (lower-case).
    Word(&'a [u8]),
    Number,
    /// A string literal; `simple` if its content is short and only letters,
    /// digits, spaces and `_%.-@` (what an injected `'a'='a` compares).
    Str {
        terminated: bool,
        simple: bool,
    },
    /// `@name` or `@@name`.
    Var,
    /// A comparison operator (`=`, `<>`, `!=`, `<`, `>=`, `<=>` …).
    Cmp,
    /// `||` or `&&`: boolean in MySQL, and string concatenation in others.
    Logic,
    /// Any other operator (`+`, `-`, `*`, `/`, `%`, `|`, `&`, `^`, `~`, `!`, `:=`).
    Arith(u8),
    LParen,
    RParen,
    Comma,
    Semi,
    Dot,
    /// A line comment or an unterminated block comment, with whether its text
    /// holds a letter or a quote (a bare `--`, `#` or `-- -` holds neither).
    Comment {
        wordy: bool,
        quoted: bool,
    },
    Other,
}

/// How the value is placed into the application's SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Bare,
    Quoted(u8),
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Tokenizes `s` from `start`. Terminated block comments are whitespace;
/// MySQL's executable comments (`/*!50000union*/`) are tokenized as code.
fn tokenize(s: &[u8], start: usize) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    let mut i = start;
    while i < s.len() {
        let b = s[i];
        let next = s.get(i + 1).copied();
        if is_space(b) {
            i += 1;
        } else if b == b'/' && next == Some(b'*') {
            if s.get(i + 2) == Some(&b'!') {
                i += 3;
                while s.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                continue;
            }
            match find(s, i + 2, b"*/") {
                Some(end) => i = end + 2,
                None => {
                    toks.push(comment(&s[i + 2..]));
                    i = s.len();
                }
            }
        } else if b == b'*' && next == Some(b'/') {
            // The end of an executable comment.
            i += 2;
        } else if b == b'#' || (b == b'-' && next == Some(b'-')) {
            let from = if b == b'#' { i + 1 } else { i + 2 };
            let end = s[from..].iter().position(|&c| c == b'\n').map_or(s.len(), |p| from + p);
            toks.push(comment(&s[from..end]));
            i = end;
        } else if b == b'\'' || b == b'"' {
            let (end, terminated) = string_end(s, i + 1, b);
            let content = &s[i + 1..if terminated { end - 1 } else { end }];
            toks.push(Tok::Str { terminated, simple: is_simple_string(content) });
            i = end;
        } else if b == b'`' {
            let end = s[i + 1..].iter().position(|&c| c == b'`').map_or(s.len(), |p| i + 1 + p + 1);
            toks.push(Tok::Word(b"`"));
            i = end;
        } else if b.is_ascii_digit() || (b == b'.' && next.is_some_and(|c| c.is_ascii_digit())) {
            let end = number_end(s, i);
            if s.get(end).is_some_and(|&c| is_word_byte(c)) {
                let word_end = word_end(s, end);
                toks.push(Tok::Word(&s[i..word_end]));
                i = word_end;
            } else {
                toks.push(Tok::Number);
                i = end;
            }
        } else if is_word_byte(b) {
            let end = word_end(s, i);
            toks.push(Tok::Word(&s[i..end]));
            i = end;
        } else if b == b'@' {
            let mut end = i + 1;
            while s.get(end).is_some_and(|&c| is_word_byte(c) || c == b'@' || c == b'.') {
                end += 1;
            }
            toks.push(Tok::Var);
            i = end;
        } else {
            let (tok, len) = operator(s, i);
            toks.push(tok);
            i += len;
        }
    }
    toks
}

/// The longest string content that counts as simple, in bytes.
const MAX_SIMPLE_STRING_BYTES: usize = 32;

fn is_simple_string(content: &[u8]) -> bool {
    content.len() <= MAX_SIMPLE_STRING_BYTES
        && content.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b' ' | b'_' | b'%' | b'.' | b'-' | b'@'))
}

fn find(s: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    s.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p)
}

fn comment(text: &[u8]) -> Tok<'static> {
    Tok::Comment {
        wordy: text.iter().any(u8::is_ascii_alphanumeric),
        quoted: text.iter().any(|&c| c == b'\'' || c == b'"'),
    }
}

/// Where the string whose content starts at `from` ends, and whether it was
/// closed. A doubled quote and a backslash escape stay inside.
fn string_end(s: &[u8], from: usize, quote: u8) -> (usize, bool) {
    let mut i = from;
    while i < s.len() {
        let c = s[i];
        if c == b'\\' {
            i += 2;
        } else if c == quote {
            if s.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return (i + 1, true);
            }
        } else {
            i += 1;
        }
    }
    (s.len(), false)
}

fn number_end(s: &[u8], start: usize) -> usize {
    let digits = |mut i: usize| {
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if s[start] == b'0' && matches!(s.get(start + 1), Some(b'x' | b'b')) {
        let mut i = start + 2;
        while s.get(i).is_some_and(u8::is_ascii_hexdigit) {
            i += 1;
        }
        return i;
    }
    let mut i = digits(start);
    if s.get(i) == Some(&b'.') {
        i = digits(i + 1);
    }
    if s.get(i) == Some(&b'e') {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if s.get(j).is_some_and(u8::is_ascii_digit) {
            i = digits(j);
        }
    }
    i
}

fn word_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&c| is_word_byte(c)) {
        i += 1;
    }
    i
}

fn operator(s: &[u8], i: usize) -> (Tok<'static>, usize) {
    let two = s.get(i..i + 2).unwrap_or(&[]);
    if s.get(i..i + 3) == Some(b"<=>") {
        return (Tok::Cmp, 3);
    }
    match two {
        b"<>" | b"<=" | b">=" | b"!=" | b"==" => return (Tok::Cmp, 2),
        b"||" | b"&&" => return (Tok::Logic, 2),
        b":=" => return (Tok::Arith(b'='), 2),
        _ => {}
    }
    let tok = match s[i] {
        b'=' | b'<' | b'>' => Tok::Cmp,
        b'(' => Tok::LParen,
        b')' => Tok::RParen,
        b',' => Tok::Comma,
        b';' => Tok::Semi,
        b'.' => Tok::Dot,
        c @ (b'+' | b'-' | b'*' | b'/' | b'%' | b'|' | b'&' | b'^' | b'~' | b'!') => Tok::Arith(c),
        _ => Tok::Other,
    };
    (tok, 1)
}

fn is_word(t: Option<&Tok<'_>>, w: &[u8]) -> bool {
    matches!(t, Some(Tok::Word(x)) if *x == w)
}

fn is_boolean_op(t: Option<&Tok<'_>>) -> bool {
    matches!(t, Some(Tok::Logic)) || matches!(t, Some(Tok::Word(w)) if matches!(*w, b"or" | b"and" | b"xor"))
}

fn is_comparison_word(w: &[u8]) -> bool {
    matches!(w, b"like" | b"rlike" | b"regexp" | b"glob" | b"similar")
}

/// Functions that injected expressions use to probe, delay or leak.
fn is_known_function(w: &[u8]) -> bool {
    matches!(
        w,
        b"sleep"
            | b"benchmark"
            | b"pg_sleep"
            | b"extractvalue"
            | b"updatexml"
            | b"ascii"
            | b"unicode"
            | b"substring"
            | b"substr"
            | b"mid"
            | b"char"
            | b"chr"
            | b"nchar"
            | b"concat"
            | b"concat_ws"
            | b"group_concat"
            | b"string_agg"
            | b"version"
            | b"database"
            | b"schema"
            | b"user"
            | b"current_user"
            | b"system_user"
            | b"session_user"
            | b"if"
            | b"iif"
            | b"ifnull"
            | b"isnull"
            | b"nullif"
            | b"coalesce"
            | b"exists"
            | b"count"
            | b"ord"
            | b"hex"
            | b"unhex"
            | b"load_file"
            | b"randomblob"
            | b"cast"
            | b"convert"
            | b"length"
            | b"len"
            | b"char_length"
            | b"elt"
            | b"make_set"
            | b"rand"
            | b"floor"
            | b"row"
            | b"json_keys"
            | b"json_extract"
            | b"xmltype"
            | b"sys_context"
            | b"md5"
            | b"sha1"
            | b"bin"
            | b"conv"
            | b"left"
            | b"right"
            | b"instr"
            | b"locate"
            | b"strcmp"
            | b"db_name"
            | b"user_name"
            | b"host_name"
            | b"suser_name"
            | b"is_srvrolemember"
            | b"sqlite_version"
            | b"current_database"
            | b"pg_read_file"
            | b"name_const"
            | b"gtid_subset"
            | b"exp"
            | b"polygon"
            | b"multipoint"
            | b"linestring"
            | b"geometrycollection"
            | b"waitfor"
            | b"to_char"
            | b"xp_cmdshell"
    )
}

/// Statement keywords that can follow a `;` in a stacked query.
fn is_statement_word(w: &[u8]) -> bool {
    matches!(
        w,
        b"select"
            | b"insert"
            | b"update"
            | b"delete"
            | b"drop"
            | b"create"
            | b"alter"
            | b"truncate"
            | b"exec"
            | b"execute"
            | b"declare"
            | b"shutdown"
            | b"waitfor"
            | b"union"
            | b"grant"
            | b"revoke"
            | b"rename"
            | b"replace"
            | b"merge"
            | b"call"
            | b"set"
            | b"if"
            | b"begin"
            | b"load"
            | b"copy"
            | b"attach"
            | b"pragma"
            | b"handler"
            | b"use"
    )
}

/// What one operand of an expression was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operand {
    Number,
    /// A string literal, and whether it is closed or simple (see [`Tok::Str`]).
    Str {
        plain: bool,
    },
    /// `true`, `false` or `null`.
    Literal,
    Ident,
    Var,
    Call {
        known: bool,
    },
    /// A parenthesised group; `sqlish` if it holds a comparison, a known
    /// function, a subquery or a number.
    Group {
        sqlish: bool,
    },
    Subquery,
}

struct Parser<'t, 'a> {
    toks: &'t [Tok<'a>],
    end: usize,
}

impl<'t, 'a> Parser<'t, 'a> {
    fn new(toks: &'t [Tok<'a>], from: usize) -> Self {
        Parser { toks, end: toks.len().min(from.saturating_add(MAX_LOOKAHEAD_TOKENS)) }
    }

    fn get(&self, i: usize) -> Option<&Tok<'a>> {
        if i < self.end {
            self.toks.get(i)
        } else {
            None
        }
    }

    /// The index just past the group that opens at `open` (an `(`), and
    /// whether the group looks like SQL. Iterative: nesting is a counter.
    fn skip_group(&self, open: usize) -> (usize, bool) {
        let mut depth = 0usize;
        let mut sqlish = false;
        let mut i = open;
        while i < self.end {
            match &self.toks[i] {
                Tok::LParen => depth += 1,
                Tok::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return (i + 1, sqlish);
                    }
                }
                Tok::Cmp | Tok::Number | Tok::Var => sqlish = true,
                Tok::Word(w) if *w == b"select" || is_known_function(w) || is_comparison_word(w) => sqlish = true,
                _ => {}
            }
            i += 1;
        }
        (i, sqlish)
    }

    fn operand(&self, mut i: usize) -> Option<(Operand, usize)> {
        // Unary prefixes.
        while matches!(self.get(i), Some(Tok::Arith(b'-' | b'+' | b'!' | b'~'))) || is_word(self.get(i), b"not") {
            i += 1;
        }
        let t = self.get(i)?;
        let (kind, mut next) = match t {
            Tok::Number => (Operand::Number, i + 1),
            Tok::Str { terminated, simple } => (Operand::Str { plain: *terminated || *simple }, i + 1),
            Tok::Var => (Operand::Var, i + 1),
            Tok::LParen => {
                if is_word(self.get(i + 1), b"select") {
                    (Operand::Subquery, self.skip_group(i).0)
                } else {
                    let (end, sqlish) = self.skip_group(i);
                    (Operand::Group { sqlish }, end)
                }
            }
            Tok::Word(w) => {
                if matches!(*w, b"null" | b"true" | b"false") {
                    (Operand::Literal, i + 1)
                } else {
                    // A possibly dotted name, possibly called.
                    let mut j = i + 1;
                    let mut dotted = false;
                    while matches!(self.get(j), Some(Tok::Dot)) && matches!(self.get(j + 1), Some(Tok::Word(_))) {
                        dotted = true;
                        j += 2;
                    }
                    if matches!(self.get(j), Some(Tok::LParen)) {
                        let known = dotted || is_known_function(w);
                        (Operand::Call { known }, self.skip_group(j).0)
                    } else if is_reserved(w) {
                        return None;
                    } else {
                        (Operand::Ident, j)
                    }
                }
            }
            _ => return None,
        };
        // Arithmetic and concatenation chains: `1+1`, `'a'||'b'`.
        while matches!(self.get(next), Some(Tok::Arith(b'+' | b'-' | b'*' | b'/' | b'%' | b'|' | b'&' | b'^')))
            || is_word(self.get(next), b"div")
            || is_word(self.get(next), b"mod")
        {
            match self.operand(next + 1) {
                Some((_, after)) if after > next + 1 => next = after,
                _ => break,
            }
        }
        Some((kind, next))
    }

    /// An expression: an operand, optionally compared. Returns the first
    /// operand's kind, whether there was a comparison, and where it ended.
    fn expression(&self, i: usize) -> Option<(Operand, bool, usize)> {
        let (lhs, mut j) = self.operand(i)?;
        let negated = is_word(self.get(j), b"not");
        if negated {
            j += 1;
        }
        match self.get(j) {
            Some(Tok::Cmp) if !negated => {
                let after = self.operand(j + 1).map_or(j + 1, |(_, a)| a);
                Some((lhs, true, after))
            }
            Some(Tok::Word(w)) if is_comparison_word(w) => {
                let after = self.operand(j + 1).map_or(j + 1, |(_, a)| a);
                Some((lhs, true, after))
            }
            Some(Tok::Word(b"sounds")) if is_word(self.get(j + 1), b"like") => {
                let after = self.operand(j + 2).map_or(j + 2, |(_, a)| a);
                Some((lhs, true, after))
            }
            Some(Tok::Word(b"is")) if !negated => {
                let mut k = j + 1;
                if is_word(self.get(k), b"not") {
                    k += 1;
                }
                match self.get(k) {
                    Some(Tok::Word(b"null" | b"true" | b"false" | b"unknown")) => Some((lhs, true, k + 1)),
                    _ => Some((lhs, false, j)),
                }
            }
            Some(Tok::Word(b"in")) if matches!(self.get(j + 1), Some(Tok::LParen)) => {
                Some((lhs, true, self.skip_group(j + 1).0))
            }
            Some(Tok::Word(b"between")) => {
                let (_, a) = self.operand(j + 1)?;
                if !is_word(self.get(a), b"and") {
                    return None;
                }
                let (_, b) = self.operand(a + 1)?;
                Some((lhs, true, b))
            }
            _ => Some((lhs, false, j)),
        }
    }

    /// Whether a statement can plausibly go on or end at `i`.
    fn tail(&self, i: usize, context: Context) -> Tail {
        match self.toks.get(i) {
            None => Tail::End,
            Some(Tok::Comment { wordy, quoted }) => match context {
                Context::Quoted(_) if !quoted => Tail::Comment,
                Context::Bare if !wordy && !quoted => Tail::Comment,
                _ => Tail::Other,
            },
            Some(Tok::Semi) => Tail::Comment,
            Some(Tok::RParen | Tok::Logic) => Tail::Continues,
            Some(Tok::Str { terminated: false, .. }) => Tail::Continues,
            Some(Tok::Word(w))
                if matches!(
                    *w,
                    b"or"
                        | b"and"
                        | b"xor"
                        | b"union"
                        | b"order"
                        | b"group"
                        | b"having"
                        | b"limit"
                        | b"into"
                        | b"procedure"
                        | b"offset"
                        | b"waitfor"
                ) =>
            {
                Tail::Continues
            }
            _ => Tail::Other,
        }
    }

    /// After a boolean operator at `i - 1`: is what follows an injected condition?
    fn condition(&self, i: usize, context: Context) -> bool {
        let Some((lhs, compared, end)) = self.expression(i) else {
            return false;
        };
        let tail = self.tail(end, context);
        if tail == Tail::Other {
            return false;
        }
        if compared {
            return true;
        }
        match lhs {
            Operand::Call { known } => known,
            Operand::Subquery => true,
            Operand::Group { sqlish } => sqlish,
            Operand::Number | Operand::Literal => match context {
                Context::Quoted(_) => true,
                Context::Bare => tail == Tail::Comment,
            },
            Operand::Str { .. } => tail == Tail::Comment,
            Operand::Ident | Operand::Var => false,
        }
    }

    /// At `i`: `union [all|distinct] [(] select <select list>`.
    fn union_select(&self, i: usize) -> bool {
        if !is_word(self.get(i), b"union") {
            return false;
        }
        let mut j = i + 1;
        if is_word(self.get(j), b"all") || is_word(self.get(j), b"distinct") {
            j += 1;
        }
        while matches!(self.get(j), Some(Tok::LParen)) {
            j += 1;
        }
        if !is_word(self.get(j), b"select") {
            return false;
        }
        self.select_list(j + 1)
    }

    /// Whether what follows a `select` at `i - 1` looks like a select list.
    fn select_list(&self, mut i: usize) -> bool {
        if is_word(self.get(i), b"distinct") || is_word(self.get(i), b"all") || is_word(self.get(i), b"top") {
            i += 1;
        }
        match self.get(i) {
            Some(Tok::Number | Tok::Var | Tok::Str { .. } | Tok::LParen | Tok::Arith(b'*')) => true,
            Some(Tok::Word(b"null" | b"true" | b"false")) => true,
            Some(Tok::Word(_)) => match self.operand(i) {
                Some((Operand::Call { .. }, _)) => true,
                Some((_, next)) => {
                    matches!(self.get(next), Some(Tok::Comma | Tok::Comment { .. })) || is_word(self.get(next), b"from")
                }
                None => false,
            },
            _ => false,
        }
    }

    /// At `i` (just after a `;`): a statement that does something.
    fn stacked_statement(&self, i: usize, context: Context) -> bool {
        let Some(Tok::Word(w)) = self.get(i) else {
            return false;
        };
        if let Context::Quoted(_) = context {
            return is_statement_word(w);
        }
        let next = self.get(i + 1);
        let word_after = |k: usize, ws: &[&[u8]]| ws.iter().any(|w| is_word(self.get(k), w));
        match *w {
            b"drop" | b"truncate" => word_after(
                i + 1,
                &[b"table", b"database", b"schema", b"view", b"procedure", b"function", b"trigger", b"index"],
            ),
            b"create" | b"alter" => {
                word_after(i + 1, &[b"table", b"database", b"schema", b"procedure", b"function", b"trigger", b"login"])
            }
            b"delete" => {
                is_word(next, b"from")
                    && matches!(self.get(i + 2), Some(Tok::Word(_)))
                    && (matches!(self.get(i + 3), Some(Tok::Semi | Tok::Comment { .. }))
                        || is_word(self.get(i + 3), b"where"))
            }
            b"insert" => {
                is_word(next, b"into")
                    && matches!(self.get(i + 2), Some(Tok::Word(_)))
                    && (matches!(self.get(i + 3), Some(Tok::LParen))
                        || word_after(i + 3, &[b"values", b"select", b"set"]))
            }
            b"update" => {
                matches!(next, Some(Tok::Word(_)))
                    && is_word(self.get(i + 2), b"set")
                    && matches!(self.get(i + 3), Some(Tok::Word(_)))
                    && matches!(self.get(i + 4), Some(Tok::Cmp))
            }
            b"exec" | b"execute" => match next {
                Some(Tok::LParen | Tok::Var | Tok::Str { .. }) => true,
                Some(Tok::Word(x)) => x.starts_with(b"xp_") || x.starts_with(b"sp_") || *x == b"master",
                _ => false,
            },
            b"declare" | b"set" => matches!(next, Some(Tok::Var)),
            b"shutdown" => matches!(next, Some(Tok::Comment { .. })) || is_word(next, b"with"),
            b"waitfor" => is_word(next, b"delay") || is_word(next, b"time"),
            b"select" => self.select_list(i + 1),
            b"if" => {
                let after = match next {
                    Some(Tok::LParen) => match self.skip_group(i + 1) {
                        (end, true) => end,
                        _ => return false,
                    },
                    _ => match self.expression(i + 1) {
                        Some((_, true, end)) => end,
                        _ => return false,
                    },
                };
                matches!(self.get(after), Some(Tok::Word(x)) if is_statement_word(x))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    End,
    Comment,
    Continues,
    Other,
}

/// Keywords that cannot be a plain column name in an operand.
fn is_reserved(w: &[u8]) -> bool {
    matches!(
        w,
        b"select"
            | b"union"
            | b"from"
            | b"where"
            | b"and"
            | b"or"
            | b"xor"
            | b"not"
            | b"order"
            | b"group"
            | b"by"
            | b"having"
            | b"limit"
            | b"into"
            | b"is"
            | b"in"
            | b"like"
            | b"between"
            | b"as"
    )
}

/// Checks the token stream of one context and names the rule that matched.
/// `glued`: the break quote starts the value or follows a word or `)`, as
/// in `admin'--` (a quote after a space more often opens a quotation).
fn check(toks: &[Tok<'_>], context: Context, glued: bool) -> Option<&'static str> {
    if let Context::Quoted(_) = context {
        if let Some(rule) = check_after_break(toks, context, glued) {
            return Some(rule);
        }
    } else if let Some(rule) = check_bare_start(toks) {
        return Some(rule);
    }
    for i in 0..toks.len() {
        match toks[i] {
            Tok::Word(b"union") if Parser::new(toks, i).union_select(i) => return Some("sqli-union-select"),
            // Anywhere in the stream only the strict shapes count.
            Tok::Semi if Parser::new(toks, i + 1).stacked_statement(i + 1, Context::Bare) => {
                return Some("sqli-stacked-query")
            }
            _ => {}
        }
    }
    None
}

/// The shapes that start right at a quote break.
fn check_after_break(toks: &[Tok<'_>], context: Context, glued: bool) -> Option<&'static str> {
    let p = Parser::new(toks, 0);
    let mut i = 0;
    while matches!(p.get(i), Some(Tok::RParen)) {
        i += 1;
    }
    let t = p.get(i);
    match t {
        Some(Tok::Comment { quoted: false, .. }) if glued => Some("sqli-quote-comment"),
        Some(Tok::Semi) if p.stacked_statement(i + 1, context) => Some("sqli-stacked-query"),
        _ if is_boolean_op(t) || is_word(t, b"having") => p.condition(i + 1, context).then_some("sqli-tautology"),
        Some(Tok::Cmp) => match p.operand(i + 1)? {
            (Operand::Str { plain: false }, _) => None,
            (_, end) => (p.tail(end, context) != Tail::Other).then_some("sqli-quote-comparison"),
        },
        Some(Tok::Word(w)) if is_comparison_word(w) => {
            let (rhs, end) = p.operand(i + 1)?;
            let strong = matches!(rhs, Operand::Call { known: true } | Operand::Subquery);
            (strong || p.tail(end, context) != Tail::Other).then_some("sqli-quote-comparison")
        }
        Some(Tok::Arith(_)) => match p.operand(i + 1)? {
            (Operand::Call { known: true } | Operand::Subquery | Operand::Var, _) => Some("sqli-quote-concat"),
            _ => None,
        },
        Some(Tok::Word(b"order")) => order_by(&p, i + 1, context),
        Some(Tok::Word(b"group")) if is_word(p.get(i + 1), b"by") => {
            let tail_or_having = (i + 2..p.end)
                .any(|k| is_word(p.get(k), b"having") || matches!(p.get(k), Some(Tok::Comment { quoted: false, .. })));
            tail_or_having.then_some("sqli-group-by")
        }
        Some(Tok::Word(b"waitfor")) if is_word(p.get(i + 1), b"delay") || is_word(p.get(i + 1), b"time") => {
            Some("sqli-time-delay")
        }
        Some(Tok::Word(b"procedure")) if is_word(p.get(i + 1), b"analyse") => Some("sqli-procedure-analyse"),
        Some(Tok::Word(b"into")) if is_word(p.get(i + 1), b"outfile") || is_word(p.get(i + 1), b"dumpfile") => {
            Some("sqli-into-outfile")
        }
        _ => None,
    }
}

/// `order by <number>` ending where a statement can.
fn order_by(p: &Parser<'_, '_>, i: usize, context: Context) -> Option<&'static str> {
    if !is_word(p.get(i), b"by") || !matches!(p.get(i + 1), Some(Tok::Number)) {
        return None;
    }
    (p.tail(i + 2, context) != Tail::Other).then_some("sqli-order-by")
}

/// The shapes of a bare (numeric) context, anchored at the start of the
/// value: `1 or 1=1`, `-1) and sleep(5)`, `or 1=1--`, `1 order by 3--`.
fn check_bare_start(toks: &[Tok<'_>]) -> Option<&'static str> {
    let p = Parser::new(toks, 0);
    let mut i = 0;
    while matches!(p.get(i), Some(Tok::Arith(b'-' | b'+'))) {
        i += 1;
    }
    let led_by_number = matches!(p.get(i), Some(Tok::Number));
    if led_by_number {
        i += 1;
    }
    while matches!(p.get(i), Some(Tok::RParen)) {
        i += 1;
    }
    let t = p.get(i);
    if is_boolean_op(t) {
        return p.condition(i + 1, Context::Bare).then_some("sqli-tautology");
    }
    if !led_by_number {
        return None;
    }
    match t {
        Some(Tok::Word(b"order")) => order_by(&p, i + 1, Context::Bare),
        Some(Tok::Word(w)) if is_comparison_word(w) => match p.operand(i + 1)? {
            (Operand::Call { known: true } | Operand::Subquery, _) => Some("sqli-tautology"),
            _ => None,
        },
        Some(Tok::Word(b"procedure")) if is_word(p.get(i + 1), b"analyse") => Some("sqli-procedure-analyse"),
        _ => None,
    }
}

/// Bytes that some token shape needs (quotes, comments, operators,
/// parentheses, separators, variables).
pub(crate) const SPECIAL_BYTES: u128 = crate::Bytes::set(b"'\"`;#()-/*=<>|&@!~^%");

/// Whether a value can match any shape at all: it has one of the
/// [`SPECIAL_BYTES`] (`has_special`), or holds `union` (`1 union select 1`),
/// or starts like a bare condition (`1 or 2 like 2`, `or 1 between 0 and 2`).
pub(crate) fn worth_tokenizing(s: &[u8], has_special: bool) -> bool {
    if has_special || crate::contains(s, b"union") {
        return true;
    }
    let start = s.iter().position(|&b| !is_space(b) && b != b'+').map_or(&s[s.len()..], |p| &s[p..]);
    start.first().is_some_and(u8::is_ascii_digit)
        || [&b"or"[..], b"and", b"xor"]
            .iter()
            .any(|w| start.starts_with(w) && start.get(w.len()).is_some_and(|&b| is_space(b)))
}

/// Runs every context over one normalised value (and, if it holds block
/// comments, over the value with them removed, for `un/**/ion`).
pub(crate) fn detect(s: &[u8]) -> Option<&'static str> {
    if let Some(rule) = detect_contexts(s) {
        return Some(rule);
    }
    if find(s, 0, b"/*").is_some() {
        let stripped = strip_block_comments(s);
        return detect_contexts(&stripped);
    }
    None
}

fn detect_contexts(s: &[u8]) -> Option<&'static str> {
    if let Some(rule) = check(&tokenize(s, 0), Context::Bare, false) {
        return Some(rule);
    }
    for quote in [b'\'', b'"'] {
        if let Some(at) = break_position(s, quote) {
            let glued = at == 0 || s.get(at - 1).is_some_and(|&c| is_word_byte(c) || c == b')');
            if let Some(rule) = check(&tokenize(s, at + 1), Context::Quoted(quote), glued) {
                return Some(rule);
            }
        }
    }
    None
}

/// The first quote that would end a string the application opened (a
/// doubled quote is an escaped one and does not).
fn break_position(s: &[u8], quote: u8) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        if s[i] == quote {
            if s.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

fn strip_block_comments(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'/' && s.get(i + 1) == Some(&b'*') && s.get(i + 2) != Some(&b'!') {
            match find(s, i + 2, b"*/") {
                Some(end) => i = end + 2,
                None => break,
            }
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(s: &str) -> Option<&'static str> {
        detect(s.as_bytes())
    }

    #[test]
    fn classic_quote_tautologies_are_sql_injection() {
        for s in ["' or 1=1--", "admin' or '1'='1", "' or ''='", "1' or 'a'='a", "') or ('x'='x", "' or 1#"] {
            assert_eq!(hit(s), Some("sqli-tautology"), "{s}");
        }
    }

    #[test]
    fn union_select_with_a_select_list_is_sql_injection() {
        for s in ["1 union select 1,2,3", "' union all select null,null--", "-1 union select password from users"] {
            assert_eq!(hit(s), Some("sqli-union-select"), "{s}");
        }
        assert_eq!(hit("un/**/ion sel/**/ect 1,2"), Some("sqli-union-select"));
    }

    #[test]
    fn stacked_statements_are_sql_injection() {
        assert_eq!(hit("'; drop table users--"), Some("sqli-stacked-query"));
        assert_eq!(hit("1; drop table users"), Some("sqli-stacked-query"));
        assert_eq!(hit("10; exec xp_cmdshell 'dir'"), Some("sqli-stacked-query"));
    }

    #[test]
    fn a_quote_followed_by_a_comment_is_sql_injection() {
        assert_eq!(hit("admin'--"), Some("sqli-quote-comment"));
        assert_eq!(hit("admin'#"), Some("sqli-quote-comment"));
    }

    #[test]
    fn english_with_sql_words_is_not_sql_injection() {
        for s in [
            "select the best option or 2",
            "O'Brien",
            "rock 'n' roll or jazz",
            "the students' or teachers' opinion",
            "press '#' to continue",
            "2 and 2=4 is basic math",
            "1 or 2",
            "Done; select the next item",
            "we'll drop by at 5; delete from the list later",
            "it's -- well -- complicated",
            "union select committee meets on monday",
            "kids' group by age",
            "Jones' order by phone",
        ] {
            assert_eq!(hit(&s.to_ascii_lowercase()), None, "{s}");
        }
    }

    #[test]
    fn nested_parentheses_are_read_with_a_bounded_lookahead_and_no_recursion() {
        assert_eq!(hit("' or ((((1=1))))--"), Some("sqli-tautology"));
        let deep = format!("' or {}1=1", "(".repeat(100_000));
        assert_eq!(hit(&deep), None);
    }
}
