//! The compiled pattern rules: one `RegexSet` per category, each pattern
//! with a stable rule id.
//!
//! Patterns run on normalised bytes (lower-case ASCII, see `normalize`) with
//! Unicode off, so a class like `\s` or `\w` is ASCII and invalid UTF-8 is
//! simply bytes that match nothing. Rust's regex engine runs in time linear
//! in the input, whatever the pattern, so no input can make a rule
//! backtrack. Each pattern is written to need context around the dangerous
//! word, not the word alone: `<script` as a tag, `javascript:` followed by
//! code, a shell separator followed by a command and its arguments, `../`
//! as a path step.

use regex::bytes::{RegexSet, RegexSetBuilder};

use crate::{Bytes, Category};

/// Bytes without which no rule of a set can match (after normalisation);
/// a value with none of them skips the set. The SQL set also runs when one
/// of [`SQLI_TRIGGER_WORDS`] occurs (`into outfile`, `from sysobjects`).
pub(crate) const SQLI_TRIGGERS: u128 = Bytes::set(b"(@.'\"/;#");
pub(crate) const SQLI_TRIGGER_WORDS: &[&[u8]] = &[b"file", b"schema", b"master", b"xp_", b"sp_", b"sys", b"pg_"];
/// `&` and `\\` are there because entity and escape decoding can produce the others.
pub(crate) const XSS_TRIGGERS: u128 = Bytes::set(b"<:\"'`{(=&\\");
pub(crate) const CMDI_TRIGGERS: u128 = Bytes::set(b";&|\n\r`${");
pub(crate) const TRAVERSAL_TRIGGERS: u128 = Bytes::set(b"./\\:");
pub(crate) const ALL_TRIGGERS: u128 = SQLI_TRIGGERS | XSS_TRIGGERS | CMDI_TRIGGERS | TRAVERSAL_TRIGGERS;

/// The largest compiled size of one set, in bytes (the regex crate's own
/// default is 10 MiB; these sets are far below it).
const SET_SIZE_LIMIT_BYTES: usize = 32 * 1024 * 1024;

/// Event handler attribute names (without the `on`).
const HANDLERS: &str = "(?:abort|activate|afterprint|afterscriptexecute|animation[a-z]*|auxclick|beforecopy|beforecut|\
beforeinput|beforepaste|beforeprint|beforescriptexecute|beforetoggle|beforeunload|begin|blur|bounce|cancel|canplay[a-z]*|\
change|click|close|contextmenu|copy|cuechange|cut|dblclick|drag[a-z]*|drop|durationchange|emptied|end|ended|error|finish|\
focus[a-z]*|formdata|fullscreen[a-z]*|hashchange|input|invalid|key[a-z]+|load[a-z]*|message|mouse[a-z]+|move[a-z]*|\
paste|pause|play[a-z]*|pointer[a-z]+|popstate|progress|ratechange|readystatechange|repeat|reset|resize|scroll[a-z]*|\
search|seek[a-z]+|select[a-z]*|show|stalled|start|storage|submit|suspend|timeupdate|toggle|touch[a-z]+|\
transition[a-z]+|unhandledrejection|unload|volumechange|waiting|webkit[a-z]+|wheel|zoom)";

/// `javascript:` and its relatives, with the whitespace and control
/// characters browsers ignore inside the scheme.
const SCRIPT_SCHEME: &str = r"(?:j[\s\x00-\x1f]*a[\s\x00-\x1f]*v[\s\x00-\x1f]*a|v[\s\x00-\x1f]*b|l[\s\x00-\x1f]*i[\s\x00-\x1f]*v[\s\x00-\x1f]*e)[\s\x00-\x1f]*s[\s\x00-\x1f]*c[\s\x00-\x1f]*r[\s\x00-\x1f]*i[\s\x00-\x1f]*p[\s\x00-\x1f]*t[\s\x00-\x1f]*:";

fn xss_rules() -> Vec<(&'static str, String)> {
    vec![
        ("xss-script-tag", r"</?script(?:[\s/>]|$)".into()),
        ("xss-dangerous-tag", r"<(?:iframe|frame|frameset|object|embed|applet|isindex|vmlframe)(?:[\s/>]|$)".into()),
        ("xss-meta-or-base-tag", r"<(?:meta|base)[\s/][^>]*(?:http-equiv|href|charset)".into()),
        ("xss-link-import", r#"<link[\s/][^>]*rel\s*=\s*["']?import"#.into()),
        ("xss-event-handler", r#"<[a-z][^>]*[\s/"'`;]on[a-z]{3,}\s*="#.into()),
        (
            "xss-attribute-breakout",
            format!(
                r#"["'`][\s/]*(?:[a-z-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>"']*))?[\s/]+){{0,4}}on{HANDLERS}\s*="#
            ),
        ),
        (
            "xss-script-uri",
            format!(r#"{SCRIPT_SCHEME}\s*(?:[/\\%(\[`'"]|[a-z_$][\w$.]*[(`\[=])"#),
        ),
        (
            "xss-script-uri-attribute",
            format!(
                r#"(?:href|src|action|formaction|data|background|dynsrc|lowsrc|poster|to|from|values|url)\s*[=(]\s*["'`]?\s*{SCRIPT_SCHEME}"#
            ),
        ),
        (
            "xss-data-uri",
            r"data:\s*(?:text/html|image/svg\+xml|application/(?:x-)?(?:javascript|ecmascript)|text/(?:javascript|ecmascript))"
                .into(),
        ),
        (
            "xss-css-expression",
            r#"(?:style\s*=[^>]*expression\s*\(|expression\s*\(\s*(?:alert|prompt|confirm|eval|document|window|javascript|this|top|self|parent|location|string)\b)"#
                .into(),
        ),
        ("xss-css-binding", r"(?:-moz-binding|behavior)\s*:\s*url\s*\(".into()),
        (
            "xss-js-breakout",
            r#"["'`]\s*[;+\-*/,)|&]+\s*(?:(?:alert|prompt|confirm|eval|settimeout|setinterval|fetch|atob|import)\s*[(`]|document\s*\.\s*(?:cookie|domain|write|location)|window\s*\.\s*(?:location|open|name)|new\s+function\b|string\s*\.\s*fromcharcode|top\s*\[|self\s*\[|this\s*\[)"#
                .into(),
        ),
        ("xss-srcdoc", r"\bsrcdoc\s*=".into()),
        ("xss-template-injection", r"\{\{[^}]*(?:constructor|\$eval|\$on\b|alert\s*\()".into()),
    ]
}

/// Commands that are not English words: a shell separator before one is enough.
const SHELL_ONLY_COMMANDS: &str = "(?:whoami|uname|ifconfig|ipconfig|nslookup|wget|netcat|ncat|mkfifo|chmod|chown|busybox|\
certutil|bitsadmin|systeminfo|tasklist|useradd|crontab|nohup|xterm|printenv|wmic|regsvr32|rundll32|mshta|cscript|wscript|\
msiexec|getent|netstat|lsof|tcpdump|socat|xxd|powershell|pwsh|ls|pwd|sh|zsh|ksh|csh|tcsh|cmd\\.exe|\
/bin/[a-z]+|/usr/bin/[a-z]+|/sbin/[a-z]+)";

/// Every command the rules know, including those that are also English
/// words ("cat", "id", "sleep"): these need shell-like arguments or an
/// unspaced separator.
const ANY_COMMAND: &str = "(?:whoami|uname|ifconfig|ipconfig|nslookup|wget|netcat|ncat|mkfifo|chmod|chown|busybox|\
certutil|bitsadmin|systeminfo|tasklist|useradd|crontab|nohup|xterm|printenv|wmic|regsvr32|rundll32|mshta|cscript|wscript|\
msiexec|getent|netstat|lsof|tcpdump|socat|xxd|powershell|pwsh|ls|pwd|sh|bash|zsh|ksh|csh|tcsh|dash|cmd(?:\\.exe)?|\
python[23]?|perl|ruby|php|node|lua|telnet|tftp|ftp|ssh|scp|curl|cat|tac|id|echo|printf|ping|sleep|find|type|dir|more|less|\
head|tail|kill|killall|net|env|nc|rm|cp|mv|touch|ps|who|uptime|hostname|base64|passwd|nmap|grep|awk|sed|cut|sort|tee|\
xargs|eval|exec|timeout|nl|od|strings|file|stat|du|df|mount|sudo|su|systemctl|service|reboot|shutdown|halt|history|\
set|export|openssl|rev|time|whois|dig|host|arp|route|/bin/[a-z]+|/usr/bin/[a-z]+|/sbin/[a-z]+)";

/// What an argument of a shell command looks like, as opposed to a word
/// of prose: an option, a path, an address, a redirect, a variable.
const SHELL_ARGUMENT: &str = r#"(?:\s+(?:-{1,2}[a-z0-9]|/|~|\.\.?/|[a-z]:\\|\\\\|\$|%[a-z]|\d{1,3}(?:\.\d{1,3}){3}|https?:|[a-z0-9.-]+\.(?:sh|txt|php|py|pl|exe|bat|ps1|conf|ini|log|db|key|pem)\b|['"][^'"]*['"]\s*[;|&>])|\s*[<>])"#;

fn cmdi_rules() -> Vec<(&'static str, String)> {
    vec![
        ("cmdi-separator-command", format!(r"(?:[;&|\n\r]|\$\()\s*{SHELL_ONLY_COMMANDS}(?:[\s;&|<>`)'#]|$)")),
        ("cmdi-command-arguments", format!(r"(?:[;&|\n\r]|\$\()\s*{ANY_COMMAND}{SHELL_ARGUMENT}")),
        ("cmdi-unspaced-separator", format!(r"(?:;|&&|\|\||(?:^|[^\w&])&){ANY_COMMAND}(?:[\s;&|<>`)#]|$)")),
        ("cmdi-unspaced-pipe", format!(r"(?:^|[^|])\|{ANY_COMMAND}(?:[\s;&<>`)#]|$)")),
        ("cmdi-spaced-separator-end", format!(r"(?:[\n\r]|&&|\|\|)\s*{ANY_COMMAND}\s*(?:[;&|`#]|$)")),
        ("cmdi-probe-id", r"[;\n\r]\s*id\s*(?:[;&|`#]|$)|\|\s*id\s*(?:[;&`#]|$)".into()),
        ("cmdi-sleep", r"(?:[;&|\n\r]|\$\()\s*sleep\s+\d+\s*(?:[;&|`#)]|$)".into()),
        (
            "cmdi-redirect",
            format!(r"(?:[;&|\n\r]|\$\()\s*{ANY_COMMAND}\s[^\n;&|]{{0,64}}>{{1,2}}\s*(?:/|~|\.\.?/|[a-z]:\\)"),
        ),
        ("cmdi-windows-net", r"[;&|\n\r]\s*net\s+(?:user|localgroup|share|view|use)\b".into()),
        // A backtick that opens a code span in prose follows whitespace; one
        // glued to a value (`127.0.0.1`id``) is substitution, and so is one
        // starting the value unless it reads as a code span followed by prose.
        ("cmdi-command-substitution", format!(r"(?:\$\(\s*|[^\s(\[`]`){ANY_COMMAND}(?:[\s;&|<>`)]|$)")),
        ("cmdi-leading-substitution", format!(r"^`{ANY_COMMAND}(?:\s|`\s*(?:[;&|]|$))")),
        ("cmdi-process-list", r"(?:[;&|\n\r]|\$\()\s*ps\s+(?:aux|-?ef|-a)\b".into()),
        ("cmdi-brace-expansion", format!(r"\{{\s*{ANY_COMMAND}\s*,")),
        ("cmdi-ifs", r"\$\{?ifs\b".into()),
        (
            "cmdi-reverse-shell",
            r"(?:/dev/(?:tcp|udp)/|\bnc(?:at)?\s+(?:-[a-z]*\s+)*-[a-z]*[el]\b|\bbash\s+-i\b|\bsh\s+-c\s|\bcmd(?:\.exe)?\s*/[ck]\s|\bpowershell(?:\.exe)?\s+(?:-[a-z]+\s+)*-(?:e|enc|encodedcommand|c|command|nop|w)\b|(?:curl|wget)\s+\S+\s*\|\s*(?:ba|z)?sh\b)"
                .into(),
        ),
    ]
}

fn traversal_rules() -> Vec<(&'static str, String)> {
    vec![
        ("traversal-dot-dot", r"(?:^|[^.\w-])\.{2,}[/\\]".into()),
        ("traversal-dot-dot-end", r"[/\\]\.\.(?:[;?#]|$)".into()),
        ("traversal-dot-dot-semicolon", r"\.\.;[/\\]".into()),
        (
            "traversal-sensitive-file",
            r"(?:(?:^|[/\\])etc[/\\]+(?:\.[/\\]+)*(?:passwd|shadow|group|sudoers|master\.passwd|gshadow)|(?:^|[/\\])proc[/\\]+self[/\\]|\bboot\.ini\b|\bwin\.ini\b|\bsystem\.ini\b|(?:^|[/\\])windows[/\\]+(?:system32|repair|win\.ini)|\.htpasswd\b|\.ssh[/\\]+(?:id_[a-z0-9]+|authorized_keys)|(?:^|[/\\])\.git[/\\]+(?:config|head)\b|web-inf[/\\]+web\.xml|[a-z]:[/\\]+windows[/\\])"
                .into(),
        ),
        ("traversal-file-uri", r"file:(?:/|\\){2,}(?:/|\\|[a-z]:|etc|windows|proc|localhost)".into()),
    ]
}

/// Pattern rules for SQL injection that name a database's own objects or
/// its delay, file and error functions: these do not occur in prose.
fn sqli_rules() -> Vec<(&'static str, String)> {
    vec![
        ("sqli-schema-probe", r"\binformation_schema\b|\b(?:sysobjects|syscolumns|sysdatabases|sqlite_master|pg_shadow|pg_catalog\.|msysobjects|mysql\.user)\b|\bmaster\.\.".into()),
        ("sqli-server-variable", r"@@(?:version|hostname|datadir|basedir|servername|identity|spid|language|tmpdir|global\.)".into()),
        ("sqli-extended-procedure", r"\b(?:xp_cmdshell|xp_dirtree|xp_regread|sp_executesql|sp_oacreate|sp_makewebtask|sp_addextendedproc|sp_configure|sp_password)\b".into()),
        ("sqli-file-access", r"\bload_file\s*\(|\binto\s+(?:out|dump)file\b|\bpg_read_file\s*\(|\blo_import\s*\(".into()),
        (
            "sqli-time-delay",
            r#"\b(?:pg_sleep|dbms_lock\.sleep|dbms_pipe\.receive_message|randomblob)\s*\(|\bsleep\s*\(\s*\d+(?:\.\d+)?\s*\)\s*(?:$|--|#|/\*|[;)=<>|&'"+-]|and\b|or\b|xor\b)|\bbenchmark\s*\(\s*\d|\bwaitfor\s+(?:delay|time)\s+['"]"#
                .into(),
        ),
        ("sqli-error-function", r"\b(?:extractvalue|updatexml|utl_inaddr\.get_host_\w+|utl_http\.request|ctxsys\.drithsx\.sn|dbms_xmlgen\.\w+)\s*\(".into()),
        ("sqli-executable-comment", r"/\*!\d*\s*(?:union|select|and|or|from|where|sleep|benchmark)\b".into()),
        ("sqli-hex-concat", r"\bconcat(?:_ws)?\s*\(\s*0x[0-9a-f]+".into()),
    ]
}

/// Compiled patterns and, for each, its category and rule id.
pub(crate) struct Rules {
    set: RegexSet,
    ids: Vec<(Category, &'static str)>,
}

impl Rules {
    fn compile(groups: &[(Category, Vec<(&'static str, String)>)]) -> Self {
        let mut ids = Vec::new();
        let mut patterns = Vec::new();
        for (category, rules) in groups {
            for (id, pattern) in rules {
                ids.push((*category, *id));
                patterns.push(format!("(?-u){pattern}"));
            }
        }
        let set = RegexSetBuilder::new(patterns)
            .size_limit(SET_SIZE_LIMIT_BYTES)
            .dfa_size_limit(SET_SIZE_LIMIT_BYTES)
            .build()
            // The patterns are constants of this crate, tested to compile.
            .expect("the built-in rule patterns compile");
        Rules { set, ids }
    }

    /// The category and id of the first rule (in compile order) that matches `text`.
    pub(crate) fn first_match(&self, text: &[u8]) -> Option<(Category, &'static str)> {
        if !self.set.is_match(text) {
            return None;
        }
        let matches = self.set.matches(text);
        matches.iter().next().and_then(|i| self.ids.get(i)).copied()
    }
}

/// All pattern rules, compiled once: per category, and all four in one set
/// (SQL injection, XSS, command injection, traversal, in that order of
/// precedence) for the common case where one text serves them all.
pub(crate) struct RuleSets {
    pub(crate) sqli: Rules,
    pub(crate) xss: Rules,
    pub(crate) cmdi: Rules,
    pub(crate) traversal: Rules,
    pub(crate) all: Rules,
}

impl RuleSets {
    pub(crate) fn compile() -> Self {
        let sqli = (Category::SqlInjection, sqli_rules());
        let xss = (Category::Xss, xss_rules());
        let cmdi = (Category::CommandInjection, cmdi_rules());
        let traversal = (Category::PathTraversal, traversal_rules());
        RuleSets {
            sqli: Rules::compile(std::slice::from_ref(&sqli)),
            xss: Rules::compile(std::slice::from_ref(&xss)),
            cmdi: Rules::compile(std::slice::from_ref(&cmdi)),
            traversal: Rules::compile(std::slice::from_ref(&traversal)),
            all: Rules::compile(&[sqli, xss, cmdi, traversal]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_id_is_unique_and_prefixed_by_its_category() {
        let sets = RuleSets::compile();
        let mut seen = std::collections::HashSet::new();
        for rules in [&sets.sqli, &sets.xss, &sets.cmdi, &sets.traversal] {
            for (category, id) in &rules.ids {
                assert!(id.starts_with(category.as_str()), "{id}");
                assert!(seen.insert(*id), "duplicate rule id {id}");
            }
        }
        assert_eq!(sets.all.ids.len(), seen.len());
    }
}
