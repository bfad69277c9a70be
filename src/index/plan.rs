//! A `--filter` as a predicate over terms: which records of a slice it may
//! match.
//!
//! The BPF program libpcap compiles from the filter still runs on every
//! record read, so a plan only has to answer a **superset** of what the
//! program matches: too wide costs reading, too narrow loses packets
//! silently. Every rule below leans wide where it is not certain.
//!
//! - The filter is read with libpcap's own grammar (grammar.y, scanner.l of
//!   1.10): `and` and `or` at one precedence, left to right; `not` tighter; a
//!   bare value after an operator takes the qualifiers of the primitive before
//!   it (`host a or b`, `port 80 or 443`, `not host a and b`).
//! - A primitive the index has terms for becomes the union of their postings
//!   (`host`, `net`, `port`, `portrange`, `proto`, `tcp`, `ip6`, `vlan`, ...).
//!   Anything else (`ether host`, `less`, `tcp[13] & 2 != 0`, names to look
//!   up) is "may match": every record. So is `not x`: a slice keeps no set of
//!   records that certainly match, so a negation can exclude nothing.
//! - Where the reading is in doubt (a token it does not know in a place it
//!   cannot skip), the whole filter may match everything: a scan.
//! - `vlan` moves libpcap's offsets 4 bytes on for every primitive after it in
//!   the text, whatever the `and`/`or` between them: on an untagged frame such
//!   a primitive reads other bytes than its field. After one `vlan` a leaf
//!   also takes the untagged records; after two, every record; after `mpls`,
//!   `pppoes`, `geneve` (offsets the index does not follow), every record.
//! - Records the extractor could not read (`unparsed`) are always selected.
//! - `ip`, `ip6`, `arp`, `ether proto` are EtherType terms on every link
//!   type: the extractor presents libpcap's link-type test that way on raw
//!   IP too (extract.rs).
//! - libpcap's optimizer drops loads whose value cannot matter: `net
//!   0.0.0.0/0` and `net ::/0` test the EtherType only, and an IPv6 prefix
//!   loads only the 32-bit words it covers, so a frame cut inside an IPv6
//!   address can match a prefix. The first is planned here; the second needs
//!   the extractor to index a cut address (4 bytes or more, padded).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use roaring::{MultiOps, RoaringBitmap};

use self::lex::{Kw, Pname, Tok, Token};
use super::slice::Slice;
use super::term::Term;

mod lex;
#[cfg(test)]
mod tests;

/// The TPIDs libpcap's `vlan` accepts (802.1Q, 802.1ad, old QinQ).
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// A `--filter` read as a predicate over terms.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The filter, for the texts `Node::Any` points into.
    text: String,
    root: Root,
}

#[derive(Debug, Clone)]
enum Root {
    NoFilter,
    /// The filter could not be read with certainty (why, for `--explain`).
    Unread(String),
    Node(Node),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(Leaf),
    /// May match every record; the filter's bytes `start..end`, for
    /// `--explain`.
    Any(usize, usize),
    /// At least one child is not `Any` (an `And` of `Any`s is an `Any`).
    And(Branch),
    /// No child is `Any` (that would make the whole `Or` an `Any`).
    Or(Branch),
}

#[derive(Debug, Clone, PartialEq)]
struct Branch {
    children: Vec<Node>,
    /// Levels of `And`/`Or` from here down, bounded by [`MAX_HEIGHT`]:
    /// evaluating, showing and dropping a tree recurse through them.
    height: u32,
}

/// How deep `And`s and `Or`s may nest (`a and b or c and d or ...` nests one
/// level per change of operator); a deeper part may match everything.
const MAX_HEIGHT: u32 = 64;

impl Node {
    fn height(&self) -> u32 {
        match self {
            Node::And(b) | Node::Or(b) => b.height,
            Node::Leaf(_) | Node::Any(..) => 0,
        }
    }
}

/// Positions holding any term within one of `ranges`.
#[derive(Debug, Clone, PartialEq)]
struct Leaf {
    label: String,
    /// Inclusive ranges of terms of one kind each (low <= high).
    ranges: Vec<(Term, Term)>,
    /// After one `vlan` in the filter: libpcap reads it 4 bytes further on,
    /// right for tagged frames, other bytes on untagged ones.
    after_vlan: bool,
}

impl Plan {
    /// Never fails: what it cannot read with certainty becomes "may match".
    pub fn parse(filter: Option<&str>) -> Plan {
        let root = match filter {
            None => Root::NoFilter,
            Some(text) => {
                let tokens = lex::tokens(text);
                if tokens.is_empty() {
                    // libpcap's empty program accepts everything.
                    Root::NoFilter
                } else {
                    let mut parser = Parser {
                        text,
                        tokens: &tokens,
                        pos: 0,
                        vlans: 0,
                        lost: false,
                        depth: 0,
                    };
                    match parser.prog() {
                        Ok(node) => Root::Node(node),
                        Err(Unread) => Root::Unread(parser.why()),
                    }
                }
            }
        };
        Plan {
            text: filter.unwrap_or_default().to_string(),
            root,
        }
    }

    /// Positions of `slice` that may match: always a subset of
    /// slice.present, always including slice.unparsed.
    pub fn select(&self, slice: &Slice) -> RoaringBitmap {
        let node = match &self.root {
            Root::Node(node) => node,
            Root::NoFilter | Root::Unread(_) => return slice.present.clone(),
        };
        let cx = Cx {
            slice,
            untagged: OnceCell::new(),
        };
        // Every leaf is "its postings ∪ unparsed"; as ∩ and ∪ distribute over
        // that union, unparsed is added once, at the end.
        match eval(node, &cx) {
            None => slice.present.clone(),
            Some(set) => {
                let mut set = set.into_owned();
                set |= &slice.unparsed;
                set &= &slice.present;
                set
            }
        }
    }

    /// Whether `select` may look at `term`'s posting: a term in one of
    /// the leaves' ranges, or a VLAN TPID's EtherType (what tells tagged
    /// records from untagged). A slice decoded for this plan needs the
    /// postings of these terms only.
    pub fn wants(&self, term: &Term) -> bool {
        fn any_leaf(node: &Node, term: &Term) -> bool {
            match node {
                Node::Leaf(leaf) => leaf
                    .ranges
                    .iter()
                    .any(|(low, high)| low <= term && term <= high),
                Node::Any(..) => false,
                Node::And(b) | Node::Or(b) => b.children.iter().any(|c| any_leaf(c, term)),
            }
        }
        match &self.root {
            Root::NoFilter | Root::Unread(_) => false,
            Root::Node(node) => {
                matches!(term, Term::EtherType(t) if VLAN_TPIDS.contains(t)) || any_leaf(node, term)
            }
        }
    }

    /// True when the plan cannot narrow anything (no filter, or nothing
    /// understood at the top).
    pub fn selects_everything(&self) -> bool {
        match &self.root {
            Root::NoFilter | Root::Unread(_) => true,
            Root::Node(node) => matches!(node, Node::Any(..)),
        }
    }
}

/// One line for `--explain`: the predicate as understood, e.g.
/// `(host 10.0.0.1 ∪ host 10.0.0.2) ∩ tcp-port 80`, with `"text" (may match)`
/// for the parts it could not use.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::NoFilter => f.write_str("everything (no filter)"),
            Root::Unread(why) => write!(f, "everything (may match: {why})"),
            Root::Node(node) => show(node, &self.text, f),
        }
    }
}

fn show(node: &Node, text: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let list = |f: &mut fmt::Formatter<'_>, children: &[Node], sep: &str| {
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                f.write_str(sep)?;
            }
            if let Node::And(_) | Node::Or(_) = child {
                f.write_str("(")?;
                show(child, text, f)?;
                f.write_str(")")?;
            } else {
                show(child, text, f)?;
            }
        }
        Ok(())
    };
    match node {
        Node::Leaf(leaf) if leaf.after_vlan => write!(f, "({} ∪ untagged)", leaf.label),
        Node::Leaf(leaf) => f.write_str(&leaf.label),
        Node::Any(start, end) => {
            let part = text.get(*start..*end).unwrap_or("?");
            write!(f, "\"{part}\" (may match)")
        }
        Node::And(b) => list(f, &b.children, " ∩ "),
        Node::Or(b) => list(f, &b.children, " ∪ "),
    }
}

// ---------------------------------------------------------------------------
// Evaluation over one slice.

struct Cx<'s> {
    slice: &'s Slice,
    /// Records whose outer EtherType is no VLAN TPID (computed on first use).
    untagged: OnceCell<RoaringBitmap>,
}

impl Cx<'_> {
    fn untagged(&self) -> &RoaringBitmap {
        self.untagged.get_or_init(|| {
            let mut tagged = RoaringBitmap::new();
            for tpid in VLAN_TPIDS {
                if let Some(set) = self.slice.postings.get(&Term::EtherType(tpid)) {
                    tagged |= set;
                }
            }
            &self.slice.present - &tagged
        })
    }
}

/// Postings without unparsed; `None` is every record. Borrowed where a
/// single posting is the answer, so a needle query copies one bitmap.
type Set<'s> = Option<Cow<'s, RoaringBitmap>>;

fn union<'s>(
    a: Option<Cow<'s, RoaringBitmap>>,
    b: Cow<'s, RoaringBitmap>,
) -> Cow<'s, RoaringBitmap> {
    match (a, b) {
        (None, b) => b,
        (Some(Cow::Owned(mut a)), b) | (Some(b), Cow::Owned(mut a)) => {
            a |= &*b;
            Cow::Owned(a)
        }
        (Some(Cow::Borrowed(a)), Cow::Borrowed(b)) => Cow::Owned(a | b),
    }
}

fn intersection<'s>(
    a: Cow<'s, RoaringBitmap>,
    b: Cow<'s, RoaringBitmap>,
) -> Cow<'s, RoaringBitmap> {
    match (a, b) {
        (Cow::Owned(mut a), b) | (b, Cow::Owned(mut a)) => {
            a &= &*b;
            Cow::Owned(a)
        }
        (Cow::Borrowed(a), Cow::Borrowed(b)) => Cow::Owned(a & b),
    }
}

fn eval<'s>(node: &Node, cx: &Cx<'s>) -> Set<'s> {
    match node {
        Node::Any(..) => None,
        Node::Leaf(leaf) => {
            let mut postings = leaf
                .ranges
                .iter()
                .flat_map(|&(low, high)| cx.slice.range(low, high).map(|(_, posting)| posting));
            let first = postings.next();
            let mut set = match (first, postings.next()) {
                (None, _) => Cow::Owned(RoaringBitmap::new()),
                (Some(only), None) => Cow::Borrowed(only),
                // A range (`net`, `portrange`) may hold thousands of terms:
                // one multi-way union, not one union per term.
                (Some(a), Some(b)) => Cow::Owned([a, b].into_iter().chain(postings).union()),
            };
            if leaf.after_vlan {
                *set.to_mut() |= cx.untagged();
            }
            Some(set)
        }
        Node::And(b) => {
            let mut set: Set<'s> = None;
            for child in &b.children {
                let Some(more) = eval(child, cx) else {
                    continue;
                };
                let both = match set {
                    None => more,
                    Some(set) => intersection(set, more),
                };
                let empty = both.is_empty();
                set = Some(both);
                if empty {
                    break;
                }
            }
            set
        }
        Node::Or(b) => {
            let mut set = None;
            for child in &b.children {
                set = Some(union(set, eval(child, cx)?));
            }
            Some(set.unwrap_or_default())
        }
    }
}

// ---------------------------------------------------------------------------
// Reading the filter: a recursive descent over libpcap's LALR grammar
// (grammar.y), with its qualifier inheritance: `$<blk>0.q`, the qualifiers
// of whatever stands before an `and`, `or`, `not` or `(`, are those of the
// last primitive read, or of the context a parenthesis opened in.

/// The filter cannot be read with certainty.
#[derive(Debug)]
struct Unread;

type Parsed<T> = Result<T, Unread>;

/// Qualifiers (grammar.y's `struct qual`); `None` is its `qerr`, the
/// qualifiers of a primitive that has none to pass on (`tcp`, `vlan`, an
/// arithmetic test), after which a bare value is a syntax error.
type Q = Option<Qual>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Qual {
    /// `None`: no protocol qualifier.
    proto: Option<Pname>,
    /// An 802.11 address qualifier (`addr1`, `ra`...): never narrowed. The
    /// index has no direction, so `src`, `dst` and their combinations are
    /// all "either".
    wlan: bool,
    addr: Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addr {
    Default,
    Host,
    Net,
    Port,
    Portrange,
    Proto,
    Protochain,
    Gateway,
}

/// A primitive's meaning before `vlan`'s offsets are applied.
enum Spec {
    Terms {
        label: String,
        ranges: Vec<(Term, Term)>,
    },
    Any,
}

impl Spec {
    fn one(label: String, term: Term) -> Spec {
        Spec::Terms {
            label,
            ranges: vec![(term, term)],
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    tokens: &'a [Token],
    pos: usize,
    /// `vlan` primitives read so far: libpcap's offsets are 4 bytes further
    /// on for each.
    vlans: u32,
    /// After `mpls`, `pppoes`, `geneve`: offsets the index does not follow.
    lost: bool,
    /// Nesting, bounded so that no filter overflows the stack.
    depth: u32,
}

const MAX_DEPTH: u32 = 100;

fn is_arith_op(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::Op("+" | "-" | "*" | "/" | "%" | "&" | "|" | "^" | "<<" | ">>")
    )
}

fn is_relop(tok: &Tok) -> bool {
    matches!(tok, Tok::Op(">" | ">=" | "=" | "<=" | "<" | "!="))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> Option<&'a Tok> {
        self.tokens.get(self.pos + ahead).map(|t| &t.tok)
    }

    fn next(&mut self) -> Parsed<&'a Tok> {
        let tok = self.peek().ok_or(Unread)?;
        self.pos += 1;
        Ok(tok)
    }

    fn expect_op(&mut self, op: &str) -> Parsed<()> {
        match self.next()? {
            Tok::Op(o) if *o == op => Ok(()),
            _ => Err(Unread),
        }
    }

    fn expect_num(&mut self) -> Parsed<u32> {
        match self.next()? {
            Tok::Num(v) => Ok(*v),
            _ => Err(Unread),
        }
    }

    /// "May match", shown as the filter's text of tokens `from..self.pos`.
    fn any_from(&self, from: usize) -> Node {
        let start = self.tokens.get(from).map_or(0, |t| t.start);
        let end = match self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)) {
            Some(last) => last.end.max(start),
            None => start,
        };
        Node::Any(start, end)
    }

    /// `a and b`, `a or b` (tokens `from..self.pos`), flattened.
    fn combine(&self, and: bool, a: Node, b: Node, from: usize) -> Node {
        let mut children = Vec::new();
        let mut height = 0;
        for node in [a, b] {
            match node {
                Node::And(more) if and => {
                    height = height.max(more.height);
                    children.extend(more.children);
                }
                Node::Or(more) if !and => {
                    height = height.max(more.height);
                    children.extend(more.children);
                }
                node => {
                    height = height.max(node.height() + 1);
                    children.push(node);
                }
            }
        }
        let any = |n: &Node| matches!(n, Node::Any(..));
        let branch = Branch { children, height };
        if height > MAX_HEIGHT {
            self.any_from(from)
        } else if and {
            if branch.children.iter().all(any) {
                self.any_from(from)
            } else {
                Node::And(branch)
            }
        } else if branch.children.iter().any(any) {
            self.any_from(from)
        } else {
            Node::Or(branch)
        }
    }

    /// Why the filter was not read, for `--explain`: where reading stopped
    /// (the token it refused is the one there or the one before).
    fn why(&self) -> String {
        let last = self.tokens.len().saturating_sub(1);
        let (from, to) = (self.pos.saturating_sub(1).min(last), self.pos.min(last));
        let near = match (self.tokens.get(from), self.tokens.get(to)) {
            (Some(a), Some(b)) => self.text.get(a.start..b.end).unwrap_or("?"),
            _ => "?",
        };
        format!("filter not read with certainty near \"{near}\"")
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Parsed<T>) -> Parsed<T> {
        if self.depth >= MAX_DEPTH {
            return Err(Unread);
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// A primitive's node, with the offsets `vlan`, `mpls`... left it.
    fn leaf(&self, spec: Spec, from: usize) -> Node {
        match spec {
            Spec::Terms { label, ranges } if !self.lost && self.vlans < 2 => Node::Leaf(Leaf {
                label,
                ranges,
                after_vlan: self.vlans == 1,
            }),
            _ => self.any_from(from),
        }
    }

    /// prog: null expr | null
    fn prog(&mut self) -> Parsed<Node> {
        let (node, _) = self.expr(None)?;
        if self.pos != self.tokens.len() {
            return Err(Unread);
        }
        Ok(node)
    }

    /// expr: term | expr and term | expr and id | expr or term | expr or id
    fn expr(&mut self, cx: Q) -> Parsed<(Node, Q)> {
        self.nested(|p| {
            let from = p.pos;
            let (mut node, mut q) = p.term(cx)?;
            while let Some(Tok::Kw(op @ (Kw::And | Kw::Or))) = p.peek() {
                p.pos += 1;
                let (rhs, rq) = if p.id_follows() { p.id(q)? } else { p.term(q)? };
                node = p.combine(*op == Kw::And, node, rhs, from);
                q = rq;
            }
            Ok((node, q))
        })
    }

    /// After `and`/`or`, whether an `id` (a bare value) follows rather than a
    /// `term`: what the LALR parser decides on the first token after any `(`
    /// and `not`. A number starts either a bare value or an arithmetic
    /// comparison (`80 + 1 > x`), told apart by what follows it.
    fn id_follows(&self) -> bool {
        let mut i = 0;
        while let Some(Tok::Op("(") | Tok::Kw(Kw::Not)) = self.peek_at(i) {
            i += 1;
        }
        match self.peek_at(i) {
            Some(Tok::Id(_) | Tok::Hid(_) | Tok::Hid6(_) | Tok::Eid | Tok::Aid) => true,
            Some(Tok::Num(_)) => {
                i += 1;
                while let Some(Tok::Op(")")) = self.peek_at(i) {
                    i += 1;
                }
                !self
                    .peek_at(i)
                    .is_some_and(|t| is_arith_op(t) || is_relop(t))
            }
            _ => false,
        }
    }

    /// term: rterm | not term
    fn term(&mut self, cx: Q) -> Parsed<(Node, Q)> {
        self.nested(|p| {
            let from = p.pos;
            if let Some(Tok::Kw(Kw::Not)) = p.peek() {
                p.pos += 1;
                // Read for its qualifiers and its `vlan`s; a negation
                // excludes nothing.
                let (_, q) = p.term(cx)?;
                return Ok((p.any_from(from), q));
            }
            p.rterm(cx)
        })
    }

    fn rterm(&mut self, cx: Q) -> Parsed<(Node, Q)> {
        let from = self.pos;
        let any = |p: &Self| p.any_from(from);
        match self.peek().ok_or(Unread)? {
            Tok::Op("(") => {
                if self.paren_is_arith() {
                    self.comparison()?;
                    return Ok((any(self), None));
                }
                self.pos += 1;
                let (node, _) = self.expr(cx)?;
                self.expect_op(")")?;
                // paren expr ')': $$.q = $1.q, the qualifiers before `(`.
                Ok((node, cx))
            }
            Tok::Kw(Kw::Pname(pname)) => {
                let pname = *pname;
                match self.peek_at(1) {
                    Some(Tok::Op("[")) => {
                        self.comparison()?;
                        Ok((any(self), None))
                    }
                    Some(Tok::Kw(kw)) if starts_head(*kw) => self.head_id(),
                    Some(Tok::Kw(Kw::Broadcast | Kw::Multicast)) => {
                        self.pos += 2;
                        Ok((any(self), None))
                    }
                    Some(Tok::Kw(Kw::Type | Kw::Subtype | Kw::WlanFcDir)) => {
                        self.pos += 1;
                        self.wlan_type()?;
                        Ok((any(self), None))
                    }
                    _ => {
                        self.pos += 1;
                        Ok((self.leaf(abbrev(pname), from), None))
                    }
                }
            }
            Tok::Kw(kw) if starts_head(*kw) => self.head_id(),
            Tok::Num(_) | Tok::Kw(Kw::Len) | Tok::Op("-") => {
                self.comparison()?;
                Ok((any(self), None))
            }
            Tok::Kw(kw) => {
                let node = self.other(*kw, from)?;
                Ok((node, None))
            }
            _ => Err(Unread),
        }
    }

    /// Whether the `(` here opens an arithmetic operand: what follows its
    /// `)` is an operator or a comparison (`(ip[0] & 0xf) > 5`).
    fn paren_is_arith(&self) -> bool {
        let mut depth = 0usize;
        for (i, token) in self.tokens[self.pos..].iter().enumerate() {
            match token.tok {
                Tok::Op("(") => depth += 1,
                Tok::Op(")") => {
                    depth -= 1;
                    if depth == 0 {
                        return self
                            .peek_at(i + 1)
                            .is_some_and(|t| is_arith_op(t) || is_relop(t));
                    }
                }
                _ => {}
            }
        }
        false
    }

    /// The primitives of grammar.y's `other` (and the 802.11, ATM and SS7
    /// ones): none narrows, some move the offsets.
    fn other(&mut self, kw: Kw, from: usize) -> Parsed<Node> {
        self.pos += 1;
        match kw {
            Kw::Vlan => {
                let id = self.opt_pnum()?;
                let spec = match id {
                    None => Spec::Terms {
                        label: "vlan".to_string(),
                        ranges: VLAN_TPIDS
                            .iter()
                            .map(|&t| (Term::EtherType(t), Term::EtherType(t)))
                            .collect(),
                    },
                    Some(id) => match u16::try_from(id) {
                        Ok(id) if id <= 0x0fff => Spec::one(format!("vlan {id}"), Term::Vlan(id)),
                        _ => Spec::Any,
                    },
                };
                // The test reads the offsets before this `vlan` moves them.
                let node = self.leaf(spec, from);
                self.vlans += 1;
                return Ok(node);
            }
            Kw::Mpls | Kw::Pppoes | Kw::Geneve | Kw::Vxlan => {
                self.opt_pnum()?;
                self.lost = true;
            }
            Kw::Less | Kw::Greater | Kw::Ifindex | Kw::PfNum => {
                self.expect_num()?;
            }
            Kw::Byte => {
                self.expect_num()?;
                match self.next()? {
                    Tok::Op("&" | "|" | "<" | ">" | "=") => {}
                    _ => return Err(Unread),
                }
                self.expect_num()?;
            }
            Kw::Pppoed | Kw::Inbound | Kw::Outbound | Kw::Broadcast | Kw::Multicast => {}
            Kw::PfName => match self.next()? {
                Tok::Id(_) | Tok::Num(_) => {}
                _ => return Err(Unread),
            },
            Kw::Llc => {
                if let Some(Tok::Id(_) | Tok::Kw(Kw::PfNum)) = self.peek() {
                    self.pos += 1;
                }
            }
            Kw::Type | Kw::Subtype | Kw::WlanFcDir => {
                self.pos -= 1;
                self.wlan_type()?;
            }
            // ATM and SS7 primitives change the link layer on link types the
            // index does not read; the rest cannot start a primitive.
            _ => return Err(Unread),
        }
        Ok(self.any_from(from))
    }

    /// p80211: `type T [subtype S]`, `subtype S`, `dir D`.
    fn wlan_type(&mut self) -> Parsed<()> {
        let value = |p: &mut Self| match p.next()? {
            Tok::Id(_) | Tok::Num(_) => Ok(()),
            _ => Err(Unread),
        };
        match self.next()? {
            Tok::Kw(Kw::Type) => {
                value(self)?;
                if let Some(Tok::Kw(Kw::Subtype)) = self.peek() {
                    self.pos += 1;
                    value(self)?;
                }
                Ok(())
            }
            Tok::Kw(Kw::Subtype | Kw::WlanFcDir) => value(self),
            _ => Err(Unread),
        }
    }

    /// An optional `pnum` after `vlan`, `mpls`...: a `(` there can only
    /// open one.
    fn opt_pnum(&mut self) -> Parsed<Option<u32>> {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Op("(")) => self.pnum().map(Some),
            _ => Ok(None),
        }
    }

    /// pnum: NUM | paren pnum ')'
    fn pnum(&mut self) -> Parsed<u32> {
        self.nested(|p| match p.next()? {
            Tok::Num(v) => Ok(*v),
            Tok::Op("(") => {
                let v = p.pnum()?;
                p.expect_op(")")?;
                Ok(v)
            }
            _ => Err(Unread),
        })
    }

    /// `arth relop arth`: never narrowed; only its end matters.
    fn comparison(&mut self) -> Parsed<()> {
        self.arth()?;
        match self.next()? {
            t if is_relop(t) => {}
            _ => return Err(Unread),
        }
        self.arth()
    }

    fn arth(&mut self) -> Parsed<()> {
        self.nested(|p| {
            p.arth_operand()?;
            while p.peek().is_some_and(is_arith_op) {
                p.pos += 1;
                p.arth_operand()?;
            }
            Ok(())
        })
    }

    fn arth_operand(&mut self) -> Parsed<()> {
        self.nested(|p| match p.next()? {
            Tok::Op("-") => p.arth_operand(),
            Tok::Num(_) | Tok::Kw(Kw::Len) => Ok(()),
            Tok::Op("(") => {
                p.arth()?;
                p.expect_op(")")
            }
            Tok::Kw(Kw::Pname(_)) => {
                p.expect_op("[")?;
                p.arth()?;
                if let Some(Tok::Op(":")) = p.peek() {
                    p.pos += 1;
                    p.expect_num()?;
                }
                p.expect_op("]")
            }
            _ => Err(Unread),
        })
    }

    /// rterm: head id. Returns the head's qualifiers, which the id keeps.
    fn head_id(&mut self) -> Parsed<(Node, Q)> {
        let from = self.pos;
        let q = Some(self.head()?);
        let (node, _) = self.id(q)?;
        // Shown whole: `ether host 00:11:..`, not the address alone.
        let node = match node {
            Node::Any(..) => self.any_from(from),
            node => node,
        };
        Ok((node, q))
    }

    /// head: pqual dqual aqual | pqual dqual | pqual aqual | pqual PROTO |
    /// pqual PROTOCHAIN | pqual GATEWAY
    fn head(&mut self) -> Parsed<Qual> {
        let mut q = Qual {
            proto: None,
            wlan: false,
            addr: Addr::Default,
        };
        if let Some(Tok::Kw(Kw::Pname(pname))) = self.peek() {
            q.proto = Some(*pname);
            self.pos += 1;
        }
        let mut dir = false;
        match self.peek() {
            Some(Tok::Kw(first @ (Kw::Src | Kw::Dst))) => {
                self.pos += 1;
                dir = true;
                // `src or dst`, `dst and src`...: after src/dst an and/or is
                // always part of the qualifier (nothing else could follow).
                if let Some(Tok::Kw(Kw::And | Kw::Or)) = self.peek() {
                    self.pos += 1;
                    match self.next()? {
                        Tok::Kw(second @ (Kw::Src | Kw::Dst)) if second != first => {}
                        _ => return Err(Unread),
                    }
                }
            }
            Some(Tok::Kw(Kw::WlanDir)) => {
                self.pos += 1;
                dir = true;
                q.wlan = true;
            }
            _ => {}
        }
        let addr = match self.peek() {
            Some(Tok::Kw(Kw::Host)) => Addr::Host,
            Some(Tok::Kw(Kw::Net)) => Addr::Net,
            Some(Tok::Kw(Kw::Port)) => Addr::Port,
            Some(Tok::Kw(Kw::Portrange)) => Addr::Portrange,
            Some(Tok::Kw(Kw::Proto)) if !dir => Addr::Proto,
            Some(Tok::Kw(Kw::Protochain)) if !dir => Addr::Protochain,
            Some(Tok::Kw(Kw::Gateway)) if !dir => Addr::Gateway,
            _ if dir => return Ok(q),
            _ => return Err(Unread),
        };
        self.pos += 1;
        q.addr = addr;
        Ok(q)
    }

    /// id: nid | pnum | paren pid ')'; nid: ID | HID '/' NUM | HID NETMASK
    /// HID | HID | HID6 '/' NUM | HID6 | EID | AID | not id. Every form
    /// takes the qualifiers `q` it inherits, and passes them on; with none
    /// (`tcp or 80`) libpcap stops with a syntax error.
    fn id(&mut self, q: Q) -> Parsed<(Node, Q)> {
        if q.is_none() {
            return Err(Unread);
        }
        self.nested(|p| {
            let from = p.pos;
            let spec = match p.next()? {
                Tok::Kw(Kw::Not) => {
                    p.id(q)?;
                    return Ok((p.any_from(from), q));
                }
                Tok::Op("(") => {
                    let node = p.pid(q)?;
                    p.expect_op(")")?;
                    return Ok((node, q));
                }
                Tok::Num(v) => number_code(*v, q),
                Tok::Id(name) => name_code(name, q),
                Tok::Hid(addr) => match p.peek() {
                    Some(Tok::Op("/")) => {
                        p.pos += 1;
                        let len = p.expect_num()?;
                        masked_code(addr, Mask::Len(len), q)
                    }
                    Some(Tok::Kw(Kw::Mask)) => {
                        p.pos += 1;
                        match p.next()? {
                            Tok::Hid(mask) => masked_code(addr, Mask::Dotted(mask), q),
                            _ => return Err(Unread),
                        }
                    }
                    _ => dotted_code(addr, q),
                },
                Tok::Hid6(addr) => {
                    let len = match p.peek() {
                        Some(Tok::Op("/")) => {
                            p.pos += 1;
                            Some(p.expect_num()?)
                        }
                        _ => None,
                    };
                    ipv6_code(addr, len, q)
                }
                Tok::Eid | Tok::Aid => Spec::Any,
                _ => return Err(Unread),
            };
            Ok((p.leaf(spec, from), q))
        })
    }

    /// pid: nid | qid and id | qid or id (qid: pnum | pid), inside `( )`
    /// after a qualifier: ids only, all with the same qualifiers.
    fn pid(&mut self, q: Q) -> Parsed<Node> {
        let from = self.pos;
        let (mut node, _) = self.id(q)?;
        while let Some(Tok::Kw(op @ (Kw::And | Kw::Or))) = self.peek() {
            self.pos += 1;
            let (rhs, _) = self.id(q)?;
            node = self.combine(*op == Kw::And, node, rhs, from);
        }
        Ok(node)
    }
}

fn starts_head(kw: Kw) -> bool {
    matches!(
        kw,
        Kw::Src
            | Kw::Dst
            | Kw::WlanDir
            | Kw::Host
            | Kw::Net
            | Kw::Port
            | Kw::Portrange
            | Kw::Proto
            | Kw::Protochain
            | Kw::Gateway
    )
}

// ---------------------------------------------------------------------------
// What one primitive means, as gencode.c's gen_ncode, gen_scode, gen_mcode,
// gen_mcode6 and gen_proto_abbrev build it. Whatever libpcap would refuse is
// `Spec::Any` too: the filter does not compile then, and nothing is read.

/// A protocol abbreviation standing alone (`tcp`, `ip6`, ...).
fn abbrev(pname: Pname) -> Spec {
    let proto = |n: u8| Spec::one(format!("ip-proto {n}"), Term::IpProto(n));
    let ether = |t: u32| ether_type(t);
    match pname {
        Pname::Tcp => proto(6),
        Pname::Udp => proto(17),
        Pname::Sctp => proto(132),
        Pname::Icmp => proto(1),
        Pname::Igmp => proto(2),
        Pname::Igrp => proto(9),
        Pname::Pim => proto(103),
        Pname::Vrrp | Pname::Carp => proto(112),
        Pname::Icmp6 => proto(58),
        Pname::Ah => proto(51),
        Pname::Esp => proto(50),
        Pname::Ip => ether(0x0800),
        Pname::Ip6 => ether(0x86dd),
        Pname::Arp => ether(0x0806),
        Pname::Rarp => ether(0x8035),
        Pname::Decnet => ether(0x6003),
        Pname::Lat => ether(0x6004),
        Pname::Sca => ether(0x6007),
        Pname::Mopdl => ether(0x6001),
        Pname::Moprc => ether(0x6002),
        // AppleTalk also matches SNAP frames; the OSI and LLC protocols
        // are tested in the 802.2 header, not as an EtherType.
        Pname::Atalk | Pname::Aarp | Pname::Link | Pname::Other => Spec::Any,
    }
}

/// `ether proto N` (gen_ether_linktype): a type field above 1500, other
/// than AppleTalk's (also matched in SNAP frames); at most 1500 it is an
/// LLC SAP, not an EtherType.
fn ether_type(value: u32) -> Spec {
    match u16::try_from(value) {
        Ok(t) if t > 1500 && t != 0x809b && t != 0x80f3 => {
            Spec::one(format!("ether-type 0x{t:04x}"), Term::EtherType(t))
        }
        _ => Spec::Any,
    }
}

fn ip_proto(value: u32, proto: Option<Pname>) -> Spec {
    match (proto, u8::try_from(value)) {
        (None | Some(Pname::Ip | Pname::Ip6), Ok(n)) => {
            Spec::one(format!("ip-proto {n}"), Term::IpProto(n))
        }
        (Some(Pname::Link), _) => ether_type(value),
        _ => Spec::Any,
    }
}

/// A port term's constructor (`Term::TcpPort`...).
type PortTerm = fn(u16) -> Term;

/// Ports `low..=high` of the protocols `proto` allows.
fn ports(low: u32, high: u32, proto: Option<Pname>, range: bool) -> Spec {
    let (Ok(a), Ok(b)) = (u16::try_from(low), u16::try_from(high)) else {
        return Spec::Any;
    };
    // libpcap swaps a range given high to low.
    let (low, high) = (a.min(b), a.max(b));
    let kinds: &[(&str, PortTerm)] = match proto {
        None => &[
            ("", Term::TcpPort),
            ("", Term::UdpPort),
            ("", Term::SctpPort),
        ],
        Some(Pname::Tcp) => &[("tcp-", Term::TcpPort)],
        Some(Pname::Udp) => &[("udp-", Term::UdpPort)],
        Some(Pname::Sctp) => &[("sctp-", Term::SctpPort)],
        _ => return Spec::Any,
    };
    let label = if range {
        format!("{}portrange {low}-{high}", kinds[0].0)
    } else {
        format!("{}port {low}", kinds[0].0)
    };
    Spec::Terms {
        label,
        ranges: kinds.iter().map(|(_, k)| (k(low), k(high))).collect(),
    }
}

/// IPv4 addresses `addr` under `mask` (gen_host): of IPv4, ARP or RARP
/// packets, all of which the index keeps as `Ipv4` terms.
fn ipv4(addr: u32, mask: u32, proto: Option<Pname>) -> Spec {
    if !matches!(proto, None | Some(Pname::Ip | Pname::Arp | Pname::Rarp)) {
        return Spec::Any;
    }
    if mask == 0 {
        // libpcap's optimizer drops the loads of `(address & 0) == 0`: any
        // frame of the type matches, even one cut before its addresses.
        let types: &[u16] = match proto {
            Some(Pname::Ip) => &[0x0800],
            Some(Pname::Arp) => &[0x0806],
            Some(Pname::Rarp) => &[0x8035],
            _ => &[0x0800, 0x0806, 0x8035],
        };
        return Spec::Terms {
            label: "net 0.0.0.0/0".to_string(),
            ranges: types
                .iter()
                .map(|&t| (Term::EtherType(t), Term::EtherType(t)))
                .collect(),
        };
    }
    let low = addr & mask;
    // A mask with holes (`net 10.0.0.0 mask 255.0.255.0`) matches fewer
    // addresses than this range, never more.
    let high = low | !mask;
    let label = if mask == u32::MAX {
        format!("host {}", Ipv4Addr::from(low))
    } else if mask.leading_ones() + mask.trailing_zeros() == 32 {
        format!("net {}/{}", Ipv4Addr::from(low), mask.leading_ones())
    } else {
        format!("net {}-{}", Ipv4Addr::from(low), Ipv4Addr::from(high))
    };
    Spec::Terms {
        label,
        ranges: vec![(
            Term::Ipv4(low.to_be_bytes()),
            Term::Ipv4(high.to_be_bytes()),
        )],
    }
}

/// gen_ncode with a number.
fn number_code(v: u32, q: Q) -> Spec {
    let Some(q) = q else { return Spec::Any };
    if q.wlan {
        return Spec::Any;
    }
    match q.addr {
        Addr::Default | Addr::Host => ipv4(v, u32::MAX, q.proto),
        Addr::Net => {
            // A short network number is moved to the top: `net 10` is
            // 10.0.0.0/8.
            let (mut v, mut mask) = (v, u32::MAX);
            while v != 0 && v & 0xff00_0000 == 0 {
                v <<= 8;
                mask <<= 8;
            }
            ipv4(v, mask, q.proto)
        }
        Addr::Port => ports(v, v, q.proto, false),
        Addr::Portrange => ports(v, v, q.proto, true),
        Addr::Proto => ip_proto(v, q.proto),
        Addr::Protochain | Addr::Gateway => Spec::Any,
    }
}

/// libpcap's `__pcap_atoin`: 1 to 4 decimal numbers up to 255; the value
/// and its length in bits.
fn atoin(text: &str) -> Option<(u32, u32)> {
    let mut value = 0u32;
    let mut bits = 0;
    for part in text.split('.') {
        if part.is_empty() || part.len() > 12 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = part.parse().ok()?;
        if n > 255 || bits == 32 {
            return None;
        }
        value = value << 8 | n;
        bits += 8;
    }
    Some((value, bits))
}

/// gen_ncode with a dotted address: a short one is a prefix, for `host`
/// as for `net` (`host 10.1` tests 10.1.0.0/16; `net 10.0.0.0` is /32).
fn dotted_code(text: &str, q: Q) -> Spec {
    let (Some(q), Some((v, bits))) = (q, atoin(text)) else {
        return Spec::Any;
    };
    match q.addr {
        Addr::Default | Addr::Host | Addr::Net if !q.wlan => {
            let shift = 32 - bits;
            ipv4(
                v.checked_shl(shift).unwrap_or(0),
                u32::MAX.checked_shl(shift).unwrap_or(0),
                q.proto,
            )
        }
        _ => Spec::Any,
    }
}

enum Mask<'a> {
    Len(u32),
    Dotted(&'a str),
}

/// gen_mcode: `net a.b.c.d/len`, `net a.b.c.d mask m.m.m.m`.
fn masked_code(text: &str, mask: Mask<'_>, q: Q) -> Spec {
    let (Some(q), Some((n, bits))) = (q, atoin(text)) else {
        return Spec::Any;
    };
    if q.addr != Addr::Net || q.wlan {
        return Spec::Any;
    }
    let n = n.checked_shl(32 - bits).unwrap_or(0);
    let m = match mask {
        Mask::Len(len) if len <= 32 => u32::MAX.checked_shl(32 - len).unwrap_or(0),
        Mask::Dotted(text) => match atoin(text) {
            Some((m, bits)) => m.checked_shl(32 - bits).unwrap_or(0),
            None => return Spec::Any,
        },
        Mask::Len(_) => return Spec::Any,
    };
    if n & !m != 0 {
        return Spec::Any;
    }
    ipv4(n, m, q.proto)
}

/// gen_mcode6: an IPv6 host, or a network with `/len`.
fn ipv6_code(text: &str, len: Option<u32>, q: Q) -> Spec {
    let (Some(q), Ok(addr)) = (q, text.parse::<Ipv6Addr>()) else {
        return Spec::Any;
    };
    let len = len.unwrap_or(128);
    if len > 128 || q.wlan || !matches!(q.proto, None | Some(Pname::Ip6)) {
        return Spec::Any;
    }
    match q.addr {
        Addr::Net => {}
        Addr::Default | Addr::Host if len == 128 => {}
        _ => return Spec::Any,
    }
    let a = u128::from(addr);
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    if a & !mask != 0 {
        return Spec::Any;
    }
    if len == 0 {
        // As for IPv4: no load is left, every IPv6 frame matches.
        return Spec::one(format!("net {addr}/0"), Term::EtherType(0x86dd));
    }
    let label = if len == 128 {
        format!("host {addr}")
    } else {
        format!("net {addr}/{len}")
    };
    Spec::Terms {
        label,
        ranges: vec![(
            Term::Ipv6(a.to_be_bytes()),
            Term::Ipv6((a | !mask).to_be_bytes()),
        )],
    }
}

/// gen_scode: a name. Host, network and service names need a lookup (not
/// done: may match); numeric port ranges and the fixed protocol names are
/// read.
fn name_code(name: &str, q: Q) -> Spec {
    let Some(q) = q else { return Spec::Any };
    if q.wlan {
        return Spec::Any;
    }
    match q.addr {
        Addr::Portrange => {
            // `a-b` in decimal; anything else (service names, what sscanf
            // would half-read) may match.
            let Some((a, b)) = name.split_once('-') else {
                return Spec::Any;
            };
            let num = |s: &str| -> Option<u32> {
                if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                s.parse().ok()
            };
            match (num(a), num(b)) {
                (Some(a), Some(b)) => ports(a, b, q.proto, true),
                _ => Spec::Any,
            }
        }
        Addr::Proto => match q.proto {
            // IANA's numbers, as every /etc/protocols has them.
            None | Some(Pname::Ip | Pname::Ip6) => match name {
                "icmp" => ip_proto(1, q.proto),
                "igmp" => ip_proto(2, q.proto),
                "tcp" => ip_proto(6, q.proto),
                "udp" => ip_proto(17, q.proto),
                "sctp" => ip_proto(132, q.proto),
                _ => Spec::Any,
            },
            // libpcap's own table (pcap_nametoeproto).
            Some(Pname::Link) => match name {
                "arp" => ether_type(0x0806),
                "decnet" => ether_type(0x6003),
                "ip" => ether_type(0x0800),
                "ip6" => ether_type(0x86dd),
                "lat" => ether_type(0x6004),
                "loopback" => ether_type(0x9000),
                "mopdl" => ether_type(0x6001),
                "moprc" => ether_type(0x6002),
                "rarp" => ether_type(0x8035),
                "sca" => ether_type(0x6007),
                _ => Spec::Any,
            },
            _ => Spec::Any,
        },
        _ => Spec::Any,
    }
}
