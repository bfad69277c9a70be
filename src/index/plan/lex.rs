//! libpcap's scanner (scanner.l, 1.10), mirrored: the planner must cut a
//! filter into the same tokens libpcap does, or its reading of the structure
//! (which words are keywords, where an address ends) could differ from the
//! program that runs. flex takes the longest match at each point and, between
//! rules of the same length, the one listed first; so does [`tokens`], rule by
//! rule in scanner.l's order.

/// A keyword of libpcap's grammar (scanner.l's fixed words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kw {
    And,
    Or,
    Not,
    Pname(Pname),
    Src,
    Dst,
    /// `addr1`..`addr4`, `ra`, `ta`: 802.11 address qualifiers.
    WlanDir,
    Host,
    Net,
    Mask,
    Port,
    Portrange,
    Proto,
    Protochain,
    Gateway,
    Less,
    Greater,
    Byte,
    Broadcast,
    Multicast,
    Len,
    Inbound,
    Outbound,
    Ifindex,
    Vlan,
    Mpls,
    Pppoed,
    Pppoes,
    Geneve,
    /// Not a keyword of libpcap 1.10 (an ID there), one of later versions,
    /// where it moves the offsets like `geneve`: read as the later versions
    /// do, the plan is only wider with 1.10.
    Vxlan,
    /// 802.11 `type`, `subtype`, `dir`.
    Type,
    Subtype,
    WlanFcDir,
    Llc,
    /// `on`/`ifname`, `rset`/`ruleset`, `reason`, `action`: followed by an ID.
    PfName,
    /// `rnr`/`rulenum`, `srnr`/`subrulenum`: followed by a number.
    PfNum,
    /// ATM and SS7 words: only for link types the index does not serve.
    Exotic,
}

/// A protocol qualifier (grammar.y's `pname`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pname {
    Link,
    Ip,
    Arp,
    Rarp,
    Sctp,
    Tcp,
    Udp,
    Icmp,
    Igmp,
    Igrp,
    Pim,
    Vrrp,
    Carp,
    Atalk,
    Aarp,
    Decnet,
    Lat,
    Sca,
    Moprc,
    Mopdl,
    Ip6,
    Icmp6,
    Ah,
    Esp,
    /// OSI and other LLC-level protocols, `radio`: never narrowed.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Kw(Kw),
    /// A number (decimal, 0x hex, 0-prefixed octal) or one of the named
    /// constants (`tcpflags`, `tcp-syn`, `icmp-echo`, ...).
    Num(u32),
    /// A name: a host, network, service, protocol; `\name` without its `\`.
    Id(String),
    /// A dotted IPv4 address of 2 to 4 numbers.
    Hid(String),
    Hid6(String),
    /// An Ethernet address.
    Eid,
    /// An ARCnet address (`$xx`).
    Aid,
    /// One of `+ - * / % : [ ] < > ( ) & | ^ =`, or `>=`, `<=`, `!=`,
    /// `<<`, `>>` (`==` is `=`, `!` is `Kw::Not`).
    Op(&'static str),
    /// What libpcap refuses while scanning: the filter does not compile.
    Error,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    /// Byte range in the filter.
    pub start: usize,
    pub end: usize,
}

fn keyword(word: &str) -> Option<Kw> {
    use self::Pname as P;
    Some(match word {
        "dst" => Kw::Dst,
        "src" => Kw::Src,
        "link" | "ether" | "ppp" | "slip" | "fddi" | "tr" | "wlan" => Kw::Pname(P::Link),
        "arp" => Kw::Pname(P::Arp),
        "rarp" => Kw::Pname(P::Rarp),
        "ip" => Kw::Pname(P::Ip),
        "sctp" => Kw::Pname(P::Sctp),
        "tcp" => Kw::Pname(P::Tcp),
        "udp" => Kw::Pname(P::Udp),
        "icmp" => Kw::Pname(P::Icmp),
        "igmp" => Kw::Pname(P::Igmp),
        "igrp" => Kw::Pname(P::Igrp),
        "pim" => Kw::Pname(P::Pim),
        "vrrp" => Kw::Pname(P::Vrrp),
        "carp" => Kw::Pname(P::Carp),
        "ip6" => Kw::Pname(P::Ip6),
        "icmp6" => Kw::Pname(P::Icmp6),
        "ah" => Kw::Pname(P::Ah),
        "esp" => Kw::Pname(P::Esp),
        "atalk" => Kw::Pname(P::Atalk),
        "aarp" => Kw::Pname(P::Aarp),
        "decnet" => Kw::Pname(P::Decnet),
        "lat" => Kw::Pname(P::Lat),
        "sca" => Kw::Pname(P::Sca),
        "moprc" => Kw::Pname(P::Moprc),
        "mopdl" => Kw::Pname(P::Mopdl),
        "radio" | "iso" | "esis" | "es-is" | "isis" | "is-is" | "l1" | "l2" | "iih" | "lsp"
        | "snp" | "csnp" | "psnp" | "clnp" | "stp" | "ipx" | "netbeui" => Kw::Pname(P::Other),
        "host" => Kw::Host,
        "net" => Kw::Net,
        "mask" => Kw::Mask,
        "port" => Kw::Port,
        "portrange" => Kw::Portrange,
        "proto" => Kw::Proto,
        "protochain" => Kw::Protochain,
        "gateway" => Kw::Gateway,
        "type" => Kw::Type,
        "subtype" => Kw::Subtype,
        "direction" | "dir" => Kw::WlanFcDir,
        "address1" | "addr1" | "address2" | "addr2" | "address3" | "addr3" | "address4"
        | "addr4" | "ra" | "ta" => Kw::WlanDir,
        "less" => Kw::Less,
        "greater" => Kw::Greater,
        "byte" => Kw::Byte,
        "broadcast" => Kw::Broadcast,
        "multicast" => Kw::Multicast,
        "and" | "&&" => Kw::And,
        "or" | "||" => Kw::Or,
        "not" => Kw::Not,
        "len" | "length" => Kw::Len,
        "inbound" => Kw::Inbound,
        "outbound" => Kw::Outbound,
        "ifindex" => Kw::Ifindex,
        "vlan" => Kw::Vlan,
        "mpls" => Kw::Mpls,
        "pppoed" => Kw::Pppoed,
        "pppoes" => Kw::Pppoes,
        "geneve" => Kw::Geneve,
        "vxlan" => Kw::Vxlan,
        "llc" => Kw::Llc,
        "on" | "ifname" | "rset" | "ruleset" | "reason" | "action" => Kw::PfName,
        "rnr" | "rulenum" | "srnr" | "subrulenum" => Kw::PfNum,
        "lane" | "metac" | "bcc" | "oam" | "oamf4" | "oamf4ec" | "oamf4sc" | "sc" | "ilmic"
        | "vpi" | "vci" | "connectmsg" | "metaconnect" | "fisu" | "lssu" | "lsu" | "msu"
        | "hfisu" | "hlssu" | "hmsu" | "sio" | "opc" | "dpc" | "sls" | "hsio" | "hopc" | "hdpc"
        | "hsls" => Kw::Exotic,
        _ => return None,
    })
}

/// The longest keyword starting the input (keywords are letters, digits and
/// `-`, plus `&&` and `||`).
fn longest_keyword(s: &[u8]) -> Option<(usize, Kw)> {
    if s.starts_with(b"&&") {
        return Some((2, Kw::And));
    }
    if s.starts_with(b"||") {
        return Some((2, Kw::Or));
    }
    let run = s
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
        .count();
    (1..=run.min(12)).rev().find_map(|n| {
        let word = std::str::from_utf8(&s[..n]).ok()?;
        keyword(word).map(|kw| (n, kw))
    })
}

/// Named numbers (scanner.l returns NUM for them).
fn named_number(word: &[u8]) -> Option<u32> {
    Some(match word {
        b"icmptype" => 0,
        b"icmpcode" => 1,
        b"icmp-echoreply" => 0,
        b"icmp-unreach" => 3,
        b"icmp-sourcequench" => 4,
        b"icmp-redirect" => 5,
        b"icmp-echo" => 8,
        b"icmp-routeradvert" => 9,
        b"icmp-routersolicit" => 10,
        b"icmp-timxceed" => 11,
        b"icmp-paramprob" => 12,
        b"icmp-tstamp" => 13,
        b"icmp-tstampreply" => 14,
        b"icmp-ireq" => 15,
        b"icmp-ireqreply" => 16,
        b"icmp-maskreq" => 17,
        b"icmp-maskreply" => 18,
        b"icmp6type" => 0,
        b"icmp6code" => 1,
        b"icmp6-destinationunreach" => 1,
        b"icmp6-packettoobig" => 2,
        b"icmp6-timeexceeded" => 3,
        b"icmp6-parameterproblem" => 4,
        b"icmp6-echo" => 128,
        b"icmp6-echoreply" => 129,
        b"icmp6-multicastlistenerquery" => 130,
        b"icmp6-multicastlistenerreportv1" => 131,
        b"icmp6-multicastlistenerdone" => 132,
        b"icmp6-routersolicit" => 133,
        b"icmp6-routeradvert" => 134,
        b"icmp6-neighborsolicit" => 135,
        b"icmp6-neighboradvert" => 136,
        b"icmp6-redirect" => 137,
        b"icmp6-routerrenum" => 138,
        b"icmp6-nodeinformationquery" => 139,
        b"icmp6-nodeinformationresponse" => 140,
        b"icmp6-ineighbordiscoverysolicit" => 141,
        b"icmp6-ineighbordiscoveryadvert" => 142,
        b"icmp6-multicastlistenerreportv2" => 143,
        b"icmp6-homeagentdiscoveryrequest" => 144,
        b"icmp6-homeagentdiscoveryreply" => 145,
        b"icmp6-mobileprefixsolicit" => 146,
        b"icmp6-mobileprefixadvert" => 147,
        b"icmp6-certpathsolicit" => 148,
        b"icmp6-certpathadvert" => 149,
        b"icmp6-multicastrouteradvert" => 151,
        b"icmp6-multicastroutersolicit" => 152,
        b"icmp6-multicastrouterterm" => 153,
        b"tcpflags" => 13,
        b"tcp-fin" => 0x01,
        b"tcp-syn" => 0x02,
        b"tcp-rst" => 0x04,
        b"tcp-push" => 0x08,
        b"tcp-ack" => 0x10,
        b"tcp-urg" => 0x20,
        b"tcp-ece" => 0x40,
        b"tcp-cwr" => 0x80,
        _ => return None,
    })
}

fn longest_named_number(s: &[u8]) -> Option<(usize, u32)> {
    let run = s
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
        .count();
    (1..=run.min(40))
        .rev()
        .find_map(|n| named_number(&s[..n]).map(|v| (n, v)))
}

// Regular expressions of scanner.l as sets of end positions: each function
// takes the positions where a match may start and returns every position
// where one may end (flex's longest match is the greatest of them).

type Ends = Vec<usize>;

fn dedup(mut v: Ends) -> Ends {
    v.sort_unstable();
    v.dedup();
    v
}

fn lit(s: &[u8], from: &[usize], c: u8) -> Ends {
    from.iter()
        .filter(|&&p| s.get(p) == Some(&c))
        .map(|&p| p + 1)
        .collect()
}

fn lit2(s: &[u8], from: &[usize], a: u8, b: u8) -> Ends {
    lit(s, &lit(s, from, a), b)
}

/// `min` to `max` characters of a class (every length, as a regex may stop
/// anywhere).
fn class(s: &[u8], from: &[usize], min: usize, max: usize, ok: fn(u8) -> bool) -> Ends {
    let mut out = Vec::new();
    for &p in from {
        let run = s[p.min(s.len())..]
            .iter()
            .take(max)
            .take_while(|b| ok(**b))
            .count();
        out.extend((min..=run).map(|n| p + n));
    }
    dedup(out)
}

fn hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// `N`: `[0-9]+|(0X|0x)[0-9A-Fa-f]+`.
fn n(s: &[u8], from: &[usize]) -> Ends {
    let mut out = class(s, from, 1, usize::MAX, digit);
    let zero = lit(s, from, b'0');
    let mut x = lit(s, &zero, b'x');
    x.extend(lit(s, &zero, b'X'));
    out.extend(class(s, &x, 1, usize::MAX, hex));
    dedup(out)
}

/// `B`: one or two hex digits.
fn b1(s: &[u8], from: &[usize]) -> Ends {
    class(s, from, 1, 2, hex)
}

/// `W`: one to four hex digits.
fn w(s: &[u8], from: &[usize]) -> Ends {
    class(s, from, 1, 4, hex)
}

/// `count` groups of W, separated by `:`.
fn groups(s: &[u8], from: &[usize], count: usize) -> Ends {
    if count == 0 {
        return from.to_vec();
    }
    let mut at = w(s, from);
    for _ in 1..count {
        at = w(s, &lit(s, &at, b':'));
    }
    at
}

/// `{N}\.{N}\.{N}\.{N}`.
fn dotted4(s: &[u8], from: &[usize]) -> Ends {
    let mut at = n(s, from);
    for _ in 0..3 {
        at = n(s, &lit(s, &at, b'.'));
    }
    at
}

/// HID: two, three or four dotted numbers.
fn hid(s: &[u8], start: usize) -> Ends {
    let mut out = Vec::new();
    let mut at = n(s, &[start]);
    for _ in 0..3 {
        at = n(s, &lit(s, &at, b'.'));
        out.extend_from_slice(&at);
    }
    dedup(out)
}

/// V6: the 60 forms of scanner.l, generated.
fn v6(s: &[u8], start: usize) -> Ends {
    let from = [start];
    let mut out = groups(s, &from, 8);
    // `::` with g groups around it, i of them before.
    for g in 0..=7 {
        for i in 0..=g {
            let left = groups(s, &from, i);
            let mid = lit2(s, &left, b':', b':');
            out.extend(groups(s, &mid, g - i));
        }
    }
    // An IPv4 address in the last 32 bits.
    let six = lit(s, &groups(s, &from, 6), b':');
    out.extend(dotted4(s, &six));
    for g in 0..=5 {
        for i in 0..=g {
            let left = groups(s, &from, i);
            let mut at = lit2(s, &left, b':', b':');
            for _ in 0..g - i {
                at = lit(s, &w(s, &at), b':');
            }
            out.extend(dotted4(s, &at));
        }
    }
    dedup(out)
}

/// MAC: six groups of B separated by `:`, `-` or `.`; three groups of four
/// hex digits separated by `.`; twelve hex digits.
fn mac(s: &[u8], start: usize) -> Ends {
    let from = [start];
    let mut out = Vec::new();
    for sep in [b':', b'-', b'.'] {
        let mut at = b1(s, &from);
        for _ in 0..5 {
            at = b1(s, &lit(s, &at, sep));
        }
        out.extend(at);
    }
    let b2 = |from: &[usize]| class(s, from, 4, 4, hex);
    let mut at = b2(&from);
    for _ in 0..2 {
        at = b2(&lit(s, &at, b'.'));
    }
    out.extend(at);
    out.extend(class(s, &from, 12, 12, hex));
    dedup(out)
}

/// `{B}:+({B}:+)+`: what libpcap rejects as a bogus Ethernet address.
fn bogus_mac(s: &[u8], start: usize) -> Ends {
    let colons = |from: &[usize]| class(s, from, 1, usize::MAX, |b| b == b':');
    let mut out = Vec::new();
    let mut at = colons(&b1(s, &[start]));
    loop {
        at = colons(&b1(s, &at));
        if at.is_empty() {
            break;
        }
        out.extend_from_slice(&at);
    }
    dedup(out)
}

/// ID: `[A-Za-z0-9]([-_.A-Za-z0-9]*[.A-Za-z0-9])?`.
fn id(s: &[u8], start: usize) -> usize {
    if !s[start].is_ascii_alphanumeric() {
        return 0;
    }
    let run = s[start..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        .count();
    (1..=run)
        .rev()
        .find(|&n| s[start + n - 1].is_ascii_alphanumeric() || s[start + n - 1] == b'.')
        .unwrap_or(1)
}

/// scanner.l's `stou`: a number that overflows 32 bits, or an octal one
/// with an 8 or 9, is an error.
fn number(text: &[u8]) -> Option<u32> {
    let (digits, radix) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        [b'0', rest @ ..] => (rest, 8),
        _ => (text, 10),
    };
    let mut n: u32 = 0;
    for &d in digits {
        let v = (d as char).to_digit(radix)?;
        n = n.checked_mul(radix)?.checked_add(v)?;
    }
    Some(n)
}

fn op(c: u8) -> Option<&'static str> {
    Some(match c {
        b'+' => "+",
        b'-' => "-",
        b'*' => "*",
        b'/' => "/",
        b'%' => "%",
        b':' => ":",
        b'[' => "[",
        b']' => "]",
        b'<' => "<",
        b'>' => ">",
        b'(' => "(",
        b')' => ")",
        b'&' => "&",
        b'|' => "|",
        b'^' => "^",
        b'=' => "=",
        _ => return None,
    })
}

fn op2(s: &[u8]) -> Option<&'static str> {
    Some(match s.get(..2)? {
        b">=" => ">=",
        b"<=" => "<=",
        b"!=" => "!=",
        b"==" => "=",
        b"<<" => "<<",
        b">>" => ">>",
        _ => return None,
    })
}

/// The rules of scanner.l after the keywords, in its order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    Keyword,
    Op1,
    Op2,
    Aid,
    Mac,
    Num,
    Hid,
    V6,
    BogusMac,
    NamedNumber,
    Id,
    EscapedId,
    Any,
}

/// The filter as libpcap's scanner cuts it.
pub(super) fn tokens(filter: &str) -> Vec<Token> {
    let s = filter.as_bytes();
    let mut out = Vec::new();
    let mut p = 0;
    while p < s.len() {
        if matches!(s[p], b' ' | b'\r' | b'\n' | b'\t') {
            p += 1;
            continue;
        }
        let rest = &s[p..];
        // (length, rule): the longest wins, then the rule listed first.
        let mut best: (usize, Rule) = (1, Rule::Any);
        let mut offer = |len: usize, rule: Rule| {
            if len > best.0 || (len == best.0 && rule < best.1) {
                best = (len, rule);
            }
        };
        let kw = longest_keyword(rest);
        if let Some((len, _)) = kw {
            offer(len, Rule::Keyword);
        }
        if op(s[p]).is_some() || s[p] == b'!' {
            offer(1, Rule::Op1);
        }
        if op2(rest).is_some() {
            offer(2, Rule::Op2);
        }
        if s[p] == b'$' {
            if let Some(&end) = b1(s, &[p + 1]).last() {
                offer(end - p, Rule::Aid);
            }
        }
        let longest = |ends: Ends| ends.last().map(|&end| end - p);
        if let Some(len) = longest(mac(s, p)) {
            offer(len, Rule::Mac);
        }
        if let Some(len) = longest(n(s, &[p])) {
            offer(len, Rule::Num);
        }
        if let Some(len) = longest(hid(s, p)) {
            offer(len, Rule::Hid);
        }
        if let Some(len) = longest(v6(s, p)) {
            offer(len, Rule::V6);
        }
        if let Some(len) = longest(bogus_mac(s, p)) {
            offer(len, Rule::BogusMac);
        }
        let named = longest_named_number(rest);
        if let Some((len, _)) = named {
            offer(len, Rule::NamedNumber);
        }
        let id_len = id(s, p);
        if id_len > 0 {
            offer(id_len, Rule::Id);
        }
        if s[p] == b'\\' {
            let run = rest[1..]
                .iter()
                .take_while(|b| !matches!(b, b' ' | b'!' | b'(' | b')' | b'\n' | b'\t'))
                .count();
            if run > 0 {
                offer(1 + run, Rule::EscapedId);
            }
        }
        let (len, rule) = best;
        let text = &s[p..p + len];
        let word = || String::from_utf8_lossy(text).into_owned();
        let tok = match rule {
            Rule::Keyword => Tok::Kw(kw.map_or(Kw::Exotic, |(_, kw)| kw)),
            Rule::Op1 => match op(s[p]) {
                Some(o) => Tok::Op(o),
                None => Tok::Kw(Kw::Not),
            },
            Rule::Op2 => op2(rest).map_or(Tok::Error, Tok::Op),
            Rule::Aid => Tok::Aid,
            Rule::Mac => Tok::Eid,
            Rule::Num => number(text).map_or(Tok::Error, Tok::Num),
            Rule::Hid => Tok::Hid(word()),
            Rule::V6 => Tok::Hid6(word()),
            Rule::BogusMac | Rule::Any => Tok::Error,
            Rule::NamedNumber => Tok::Num(named.map_or(0, |(_, v)| v)),
            Rule::Id => Tok::Id(word()),
            Rule::EscapedId => Tok::Id(String::from_utf8_lossy(&text[1..]).into_owned()),
        };
        out.push(Token {
            tok,
            start: p,
            end: p + len,
        });
        p += len;
    }
    out
}
