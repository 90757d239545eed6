//! Placeholders in webhook templates: `{{armory.*}}`, `{{context.*}}` and
//! `{{secrets.*}}`.
//!
//! Undefined is an error that names the placeholder, never an empty string.
//! A substituted value cannot change the shape of the request: it must be a
//! plain host name inside a URI's authority, is percent-encoded in its path,
//! query or fragment, refused in a header value if it holds a line break, and
//! JSON-string-escaped inside a JSON body. Simple paths are looked up
//! directly (context keys may contain `-`); anything else is a minijinja
//! expression, evaluated with strict undefined and fuel after a check of its
//! syntax tree: no function calls, no `*` or `**`, no namespace used whole,
//! only [`FILTERS`], and an upper bound of its size within [`RenderLimits`].

use std::cell::{Cell, OnceCell};
use std::collections::BTreeMap;

use minijinja::machinery::ast::{BinOp, BinOpKind, Call, CallArg, CallType, Expr, Filter, Map, UnaryOpKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Secret;
use crate::secret::MASK;

/// The values `{{armory.*}}` offers.
pub const ARMORY_KEYS: &[&str] =
    &["callbackUri", "applicationName", "environmentName", "deploymentId", "accountName", "namespace"];

/// What `{{armory.*}}` offers beyond [`ARMORY_KEYS`] in a rollout driver's
/// templates: the action (`deploy`, `setWeight`, ...) and its weight (empty
/// for an action without one).
pub const DRIVER_KEYS: &[&str] = &["action", "weight"];

/// What `{{armory.*}}` offers beyond [`ARMORY_KEYS`] in an analysis query's
/// `queryTemplate`: the judgment run's window, as Armory's queries use it.
pub const ANALYSIS_KEYS: &[&str] = &[
    "startTimeIso8601",
    "startTimeEpochSeconds",
    "startTimeEpochMillis",
    "endTimeIso8601",
    "endTimeEpochSeconds",
    "endTimeEpochMillis",
    "intervalMillis",
    "intervalSeconds",
    "promQlStepInterval",
];

/// The filters a placeholder may use; each has a known bound on its output.
pub const FILTERS: &[&str] = &[
    "upper",
    "lower",
    "title",
    "capitalize",
    "trim",
    "replace",
    "default",
    "d",
    "join",
    "length",
    "count",
    "first",
    "last",
    "string",
    "int",
    "float",
    "abs",
    "round",
    "bool",
    "b64encode",
];

const NAMESPACES: &[&str] = &["armory", "context", "artifacts", "secrets"];

/// The longest expression a placeholder may hold. The parser builds chains
/// such as `a ~ b ~ ...` without a depth limit, and one of 100,000 links
/// overflows the stack.
const MAX_EXPRESSION: usize = 2048;
/// How deep a placeholder's syntax tree may be; real ones are a few levels.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {placeholder}: {reason}")]
    Unknown { placeholder: String, reason: String },
    #[error("placeholder {placeholder}: {reason}")]
    Invalid { placeholder: String, reason: String },
    /// A stored secret this template may not read; `reason` as
    /// [`Keyring::get_for`] gives it.
    #[error("secret {name:?} {reason}")]
    Withheld { name: String, reason: String },
    #[error("a '{{{{' at character {0} is never closed with '}}}}'")]
    Unclosed(usize),
    #[error("template statements ({{% ... %}}) are not supported; use {{{{ placeholder }}}} only")]
    Statement,
    #[error("{0}")]
    Result(String),
    /// A placeholder's bound (`placeholder` set) or the rendered field so far
    /// is over [`RenderLimits::field_bytes`].
    #[error("{}", too_large(.placeholder.as_deref(), *.size, *.limit))]
    TooLarge { placeholder: Option<String>, size: u64, limit: u64 },
    /// URI, headers and body together are over [`RenderLimits::request_bytes`].
    #[error("the rendered request is {}, over the {} limit", human(*.size), human(*.limit))]
    RequestTooLarge { size: u64, limit: u64 },
}

fn too_large(placeholder: Option<&str>, size: u64, limit: u64) -> String {
    match placeholder {
        Some(p) => {
            format!("placeholder {p} renders up to {}, over the {} limit of one field", human(size), human(limit))
        }
        None => format!("renders at least {}, over the {} limit of one field", human(size), human(limit)),
    }
}

/// `1536` as `1.5 KiB`, rounded up so that a size over a limit never reads
/// as the limit itself.
fn human(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    let tenths = (value * 10.0).ceil();
    if tenths % 10.0 == 0.0 {
        format!("{} {}", tenths / 10.0, units[unit])
    } else {
        format!("{:.1} {}", tenths / 10.0, units[unit])
    }
}

/// How much one rendering may produce and spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderLimits {
    /// The most one field (URI, a header value, the body) may render to.
    pub field_bytes: usize,
    /// The most URI, headers and body may render to together.
    pub request_bytes: usize,
    /// minijinja fuel for evaluating one placeholder: about one unit per
    /// instruction, and one per 64 bytes produced.
    pub fuel: u64,
}

impl Default for RenderLimits {
    /// 64 KiB a field and 256 KiB a request, well under the relay's 1 MiB
    /// body limit and far above any real webhook; 10,000 fuel pays for a
    /// field-sized result several times over.
    fn default() -> Self {
        Self { field_bytes: 64 * 1024, request_bytes: 256 * 1024, fuel: 10_000 }
    }
}

/// What the placeholders of one run resolve to.
#[derive(Debug, Clone, Default)]
pub struct Values {
    pub armory: BTreeMap<String, String>,
    pub context: BTreeMap<String, String>,
    /// What a deployment deploys, by name (`{{artifacts.NAME}}`).
    pub artifacts: BTreeMap<String, String>,
    /// The secrets this template may read.
    pub secrets: BTreeMap<String, Secret>,
    /// Stored secrets this template may not read, each with why (as
    /// [`Keyring::readable`] gives it): naming one is refused with that
    /// reason, not as an unknown secret.
    pub withheld: BTreeMap<String, String>,
}

/// Where a stored secret may be used. Each secret is marked for one or
/// more; [`SecretUse::Webhooks`] unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretUse {
    /// `{{secrets.NAME}}` in a webhook's URI, headers and body.
    Webhooks,
    /// A key of a file's `signing:`, or the relay's `webhook_signing_secret`.
    Signing,
    /// `{{secrets.NAME}}` in a metric provider's headers.
    Providers,
}

/// The uses one secret is marked for.
pub type Uses = std::collections::BTreeSet<SecretUse>;

impl SecretUse {
    pub const ALL: [SecretUse; 3] = [SecretUse::Webhooks, SecretUse::Signing, SecretUse::Providers];

    pub fn as_str(self) -> &'static str {
        match self {
            SecretUse::Webhooks => "webhooks",
            SecretUse::Signing => "signing",
            SecretUse::Providers => "providers",
        }
    }

    /// How an error says where the secret was to be used.
    fn place(self) -> &'static str {
        match self {
            SecretUse::Webhooks => "in webhooks",
            SecretUse::Signing => "for signing",
            SecretUse::Providers => "in metric providers",
        }
    }

    /// The marks of a secret stored before secrets had them.
    /// What a secret stored without marks may serve.
    pub const DEFAULT: SecretUse = SecretUse::Webhooks;

    pub fn default_uses() -> Uses {
        Uses::from([Self::DEFAULT])
    }

    /// `webhooks,providers`, as stored.
    pub fn join(uses: &Uses) -> String {
        uses.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(",")
    }
}

impl std::fmt::Display for SecretUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SecretUse {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        SecretUse::ALL
            .into_iter()
            .find(|u| u.as_str() == text)
            .ok_or_else(|| format!("unknown secret use {text:?}: use webhooks, signing or providers"))
    }
}

/// Every stored secret with the uses it is marked for. Derefs to the values
/// by name, for what masks them all (the scrubber).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    values: BTreeMap<String, Secret>,
    uses: BTreeMap<String, Uses>,
}

impl std::ops::Deref for Keyring {
    type Target = BTreeMap<String, Secret>;

    fn deref(&self) -> &Self::Target {
        &self.values
    }
}

impl Keyring {
    pub fn insert(&mut self, name: impl Into<String>, value: Secret, uses: Uses) {
        let name = name.into();
        self.uses.insert(name.clone(), uses);
        self.values.insert(name, value);
    }

    /// Secret `name` with its marks, whatever they are.
    pub fn entry(&self, name: &str) -> Option<(&Secret, &Uses)> {
        Some((self.values.get(name)?, self.uses.get(name)?))
    }

    pub fn remove(&mut self, name: &str) {
        self.values.remove(name);
        self.uses.remove(name);
    }

    /// Secret `name` for `use_`; else why not, as `may not be used in
    /// webhooks (it is marked for signing)`, or `None` when it is not
    /// stored. `reserved` (the relay's own signing key) is never readable
    /// by a template, whatever its marks.
    pub fn get_for(&self, name: &str, use_: SecretUse, reserved: Option<&str>) -> Option<Result<&Secret, String>> {
        let value = self.values.get(name)?;
        if use_ != SecretUse::Signing && reserved == Some(name) {
            return Some(Err(format!(
                "may not be used {} (it is the relay's own signing key, webhook_signing_secret)",
                use_.place()
            )));
        }
        // Borrowed: this runs for every secret on every attempt.
        let marked = self.uses.get(name);
        if marked.map_or(use_ == SecretUse::DEFAULT, |uses| uses.contains(&use_)) {
            return Some(Ok(value));
        }
        let marks: Vec<&str> =
            marked.map_or(vec![SecretUse::DEFAULT.as_str()], |u| u.iter().map(|u| u.as_str()).collect());
        Some(Err(format!("may not be used {} (it is marked for {})", use_.place(), marks.join(" and "))))
    }

    /// What a template of `use_` may read, and every other secret with why
    /// it may not: the two maps of [`Values`].
    pub fn readable(
        &self,
        use_: SecretUse,
        reserved: Option<&str>,
    ) -> (BTreeMap<String, Secret>, BTreeMap<String, String>) {
        let (mut readable, mut withheld) = (BTreeMap::new(), BTreeMap::new());
        for name in self.values.keys() {
            match self.get_for(name, use_, reserved) {
                Some(Ok(value)) => {
                    readable.insert(name.clone(), value.clone());
                }
                Some(Err(why)) => {
                    withheld.insert(name.clone(), why);
                }
                None => {}
            }
        }
        (readable, withheld)
    }

    /// [`Values`] for a template of `use_`, with `armory` and `context`.
    pub fn values(
        &self,
        use_: SecretUse,
        reserved: Option<&str>,
        armory: BTreeMap<String, String>,
        context: BTreeMap<String, String>,
    ) -> Values {
        let (secrets, withheld) = self.readable(use_, reserved);
        Values { armory, context, artifacts: BTreeMap::new(), secrets, withheld }
    }
}

/// Where a template's text goes, which decides how values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Uri,
    HeaderValue,
    Body {
        json: bool,
    },
    /// A PromQL query: inside a string literal a value is escaped so that
    /// it cannot close the string; outside one it may be only a name, a
    /// number or a duration. (A value inside a regex matcher's string is a
    /// regex, as the query's author chose.)
    Query,
}

enum Piece<'a> {
    Text(&'a str),
    Placeholder { expr: &'a str, raw: &'a str, offset: usize },
}

fn pieces(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(found) = text[rest..].find('{').map(|i| rest + i) {
        match text.as_bytes().get(found + 1) {
            Some(b'{') => {
                let close = text[found + 2..].find("}}").ok_or(TemplateError::Unclosed(found))? + found + 2;
                out.push(Piece::Text(&text[rest..found]));
                out.push(Piece::Placeholder {
                    expr: text[found + 2..close].trim(),
                    raw: &text[found..close + 2],
                    offset: found,
                });
                rest = close + 2;
            }
            Some(b'%') => return Err(TemplateError::Statement),
            _ => {
                out.push(Piece::Text(&text[rest..found + 1]));
                rest = found + 1;
            }
        }
    }
    out.push(Piece::Text(&text[rest..]));
    Ok(out)
}

/// `ns.key` with a key of letters, digits, `_` and `-`.
fn simple_path(expr: &str) -> Option<(&str, &str)> {
    let (ns, key) = expr.split_once('.')?;
    let ns_ok = !ns.is_empty() && ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (ns_ok && key_ok).then_some((ns, key))
}

fn environment(fuel: u64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(fuel));
    // For HTTP Basic auth: `{{ ("user:" ~ secrets.pw) | b64encode }}`.
    env.add_filter("b64encode", |value: String| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(value)
    });
    env
}

fn not_a_namespace(raw: &str, ns: &str) -> TemplateError {
    TemplateError::Unknown {
        placeholder: raw.to_owned(),
        reason: format!("{ns:?} is not a namespace; use armory, context, artifacts or secrets"),
    }
}

fn withheld(name: &str, reason: &str) -> TemplateError {
    TemplateError::Withheld { name: name.to_owned(), reason: reason.to_owned() }
}

fn armory_offers(raw: &str, extra: &[&str]) -> TemplateError {
    let offered: Vec<&str> = ARMORY_KEYS.iter().chain(extra).copied().collect();
    TemplateError::Unknown { placeholder: raw.to_owned(), reason: format!("armory offers {}", offered.join(", ")) }
}

/// The `armory` keys a template may name beyond [`ARMORY_KEYS`]: those of
/// an analysis query when `values` carries them, else none.
fn extra_keys(values: &Values) -> &'static [&'static str] {
    if ANALYSIS_KEYS.iter().all(|k| values.armory.contains_key(*k)) {
        ANALYSIS_KEYS
    } else if DRIVER_KEYS.iter().all(|k| values.armory.contains_key(*k)) {
        DRIVER_KEYS
    } else {
        &[]
    }
}

/// An upper bound of what a value renders to, and of what iterating it gives.
#[derive(Debug, Clone, Copy)]
struct Size {
    /// Bytes of its rendering.
    len: u64,
    /// Items when iterated (characters, list items, map keys).
    count: u64,
    /// Bytes of those items' renderings together.
    items: u64,
}

/// Both bounds are at most `len` for every value, so a scalar is its length.
const fn scalar(len: u64) -> Size {
    Size { len, count: len, items: len }
}

/// `True` or `False`.
const BOOL: Size = scalar(5);
/// The longest rendered number: `-5e-324` is written out as 327 characters.
const NUMBER: Size = scalar(330);

impl Size {
    fn max(self, other: Size) -> Size {
        Size { len: self.len.max(other.len), count: self.count.max(other.count), items: self.items.max(other.items) }
    }

    /// Inside a list or map a string is quoted, and a control character can
    /// become a four-byte `\xNN`.
    fn repr(self) -> u64 {
        self.len.saturating_mul(4).saturating_add(2)
    }
}

/// A filter's or test's argument.
struct Arg<'e> {
    keyword: Option<&'e str>,
    expr: &'e Expr<'e>,
    size: Size,
}

/// Walks a placeholder's syntax tree: refuses what could dump a namespace or
/// grow without bound, and with `values` bounds the rendered size.
struct Walker<'a> {
    raw: &'a str,
    values: Option<(&'a Values, bool)>,
    /// Applies to every node, as an intermediate value (say, the operand of
    /// `==` or of `length`) takes memory too.
    limit: u64,
    depth: Cell<usize>,
    /// `armory` keys allowed beyond [`ARMORY_KEYS`].
    extra: &'a [&'a str],
}

impl Walker<'_> {
    fn invalid(&self, reason: impl Into<String>) -> TemplateError {
        TemplateError::Invalid { placeholder: self.raw.to_owned(), reason: reason.into() }
    }

    /// A variable that is not directly the object of `.key` or `["key"]`.
    fn whole(&self, name: &str) -> TemplateError {
        let every = match name {
            "secrets" => "every secret",
            "armory" => "every armory value",
            "context" => "the whole context",
            "artifacts" => "every artifact",
            other => return not_a_namespace(self.raw, other),
        };
        self.invalid(format!("{{{{ {name} }}}} would render {every}; name one, as {{{{ {name}.NAME }}}}"))
    }

    fn entry(&self, ns: &str, key: &str) -> Result<Size, TemplateError> {
        if !NAMESPACES.contains(&ns) {
            return Err(not_a_namespace(self.raw, ns));
        }
        if ns == "armory" && !ARMORY_KEYS.contains(&key) && !self.extra.contains(&key) {
            return Err(armory_offers(self.raw, self.extra));
        }
        let Some((values, mask)) = self.values else { return Ok(scalar(0)) };
        if ns == "secrets"
            && let Some(reason) = values.withheld.get(key)
        {
            return Err(withheld(key, reason));
        }
        // A missing key renders nothing, or what `default` gives instead.
        let len = match ns {
            "armory" => values.armory.get(key).map_or(0, String::len),
            "context" => values.context.get(key).map_or(0, String::len),
            "artifacts" => values.artifacts.get(key).map_or(0, String::len),
            _ if mask => values.secrets.get(key).map_or(0, |_| MASK.len()),
            _ => values.secrets.get(key).map_or(0, |s| s.expose().len()),
        };
        Ok(scalar(len as u64))
    }

    /// Recursion is one level per link of a chain such as `a ~ b ~ ...`, here
    /// and when minijinja compiles and evaluates, so depth is limited.
    fn walk(&self, expr: &Expr<'_>) -> Result<Size, TemplateError> {
        let depth = self.depth.get();
        if depth >= MAX_DEPTH {
            return Err(self.invalid(format!("it nests more than {MAX_DEPTH} operations deep")));
        }
        self.depth.set(depth + 1);
        let size = self.node(expr);
        self.depth.set(depth);
        match size {
            Ok(size) if size.len > self.limit => Err(TemplateError::TooLarge {
                placeholder: Some(self.raw.to_owned()),
                size: size.len,
                limit: self.limit,
            }),
            other => other,
        }
    }

    fn node(&self, expr: &Expr<'_>) -> Result<Size, TemplateError> {
        match expr {
            Expr::Var(var) => Err(self.whole(var.id)),
            Expr::Const(c) => Ok(scalar(c.value.to_string().len() as u64)),
            Expr::GetAttr(attr) => match &attr.expr {
                Expr::Var(var) => self.entry(var.id, attr.name),
                // Part of the value's rendering; not its items' bounds, as
                // an item can itself be a longer list.
                inner => Ok(scalar(self.walk(inner)?.len)),
            },
            Expr::GetItem(item) => self.get_item(&item.expr, &item.subscript_expr),
            Expr::Slice(slice) => {
                for bound in [&slice.start, &slice.stop, &slice.step].into_iter().flatten() {
                    self.walk(bound)?;
                }
                self.walk(&slice.expr)
            }
            Expr::UnaryOp(op) => {
                self.walk(&op.expr)?;
                Ok(match op.op {
                    UnaryOpKind::Not => BOOL,
                    UnaryOpKind::Neg => NUMBER,
                })
            }
            Expr::BinOp(op) => self.bin_op(op),
            Expr::Compare(cmp) => {
                self.walk(&cmp.expr)?;
                for op in &cmp.ops {
                    self.walk(&op.expr)?;
                }
                Ok(BOOL)
            }
            Expr::IfExpr(e) => {
                self.walk(&e.test_expr)?;
                let otherwise = match &e.false_expr {
                    Some(f) => self.walk(f)?,
                    None => scalar(0),
                };
                Ok(self.walk(&e.true_expr)?.max(otherwise))
            }
            Expr::Filter(filter) => self.filter(filter),
            Expr::Test(test) => {
                self.walk(&test.expr)?;
                self.args(&test.args)?;
                Ok(BOOL)
            }
            Expr::Call(call) => Err(self.call(call)),
            Expr::List(list) => self.sequence(&list.items),
            Expr::Tuple(tuple) => self.sequence(&tuple.items),
            Expr::Map(map) => self.map(map),
        }
    }

    fn get_item(&self, expr: &Expr<'_>, subscript: &Expr<'_>) -> Result<Size, TemplateError> {
        match (expr, subscript) {
            (Expr::Var(var), Expr::Const(key)) if key.value.as_str().is_some() => {
                self.entry(var.id, key.value.as_str().unwrap_or_default())
            }
            (Expr::Var(var), _) => Err(self.whole(var.id)),
            (inner, subscript) => {
                self.walk(subscript)?;
                Ok(scalar(self.walk(inner)?.len))
            }
        }
    }

    fn bin_op(&self, op: &BinOp<'_>) -> Result<Size, TemplateError> {
        // Strings and lists repeat with `*`, and `**` grows numbers.
        match op.op {
            BinOpKind::Mul => return Err(self.invalid("the * operator is not supported in placeholders")),
            BinOpKind::Pow => return Err(self.invalid("the ** operator is not supported in placeholders")),
            _ => {}
        }
        let (left, right) = (self.walk(&op.left)?, self.walk(&op.right)?);
        Ok(match op.op {
            BinOpKind::Concat => scalar(left.len.saturating_add(right.len)),
            // Numbers, or strings and lists put end to end.
            BinOpKind::Add => Size {
                len: left.len.saturating_add(right.len).max(NUMBER.len),
                count: left.count.saturating_add(right.count),
                items: left.items.saturating_add(right.items),
            },
            BinOpKind::Sub | BinOpKind::Div | BinOpKind::FloorDiv | BinOpKind::Rem => NUMBER,
            BinOpKind::ScAnd | BinOpKind::ScOr => left.max(right),
            _ => BOOL,
        })
    }

    fn call(&self, call: &Call<'_>) -> TemplateError {
        let name = match call.identify_call() {
            CallType::Function("debug") => return self.invalid("debug() is unavailable in placeholders"),
            CallType::Function(name) | CallType::Method(_, name) => name,
            _ => "a value",
        };
        self.invalid(format!("function calls are not supported in placeholders: found {name}(...)"))
    }

    fn map(&self, map: &Map<'_>) -> Result<Size, TemplateError> {
        let mut size = Size { len: 2, count: map.keys.len() as u64, items: 0 };
        for (key, value) in map.keys.iter().zip(&map.values) {
            let (key, value) = (self.walk(key)?, self.walk(value)?);
            size.len = size.len.saturating_add(key.repr()).saturating_add(value.repr()).saturating_add(4);
            size.items = size.items.saturating_add(key.len);
        }
        Ok(size)
    }

    /// `[a, b]` or `(a,)`.
    fn sequence(&self, items: &[Expr<'_>]) -> Result<Size, TemplateError> {
        let mut size = Size { len: 2, count: items.len() as u64, items: 0 };
        for item in items {
            let item = self.walk(item)?;
            size.len = size.len.saturating_add(item.repr()).saturating_add(2);
            size.items = size.items.saturating_add(item.len);
        }
        Ok(size)
    }

    /// Each argument's size, with its keyword if it has one.
    fn args<'e>(&self, args: &'e [CallArg<'e>]) -> Result<Vec<Arg<'e>>, TemplateError> {
        args.iter()
            .map(|arg| match arg {
                CallArg::Pos(e) => Ok(Arg { keyword: None, expr: e, size: self.walk(e)? }),
                CallArg::Kwarg(name, e) => Ok(Arg { keyword: Some(*name), expr: e, size: self.walk(e)? }),
                CallArg::PosSplat(_) | CallArg::KwargSplat(_) => {
                    Err(self.invalid("argument splats (*args, **kwargs) are not supported in placeholders"))
                }
            })
            .collect()
    }

    fn filter(&self, filter: &Filter<'_>) -> Result<Size, TemplateError> {
        let input = match &filter.expr {
            Some(e) => self.walk(e)?,
            None => scalar(0),
        };
        if !FILTERS.contains(&filter.name) {
            return Err(self.invalid(format!(
                "the filter {:?} is not available in placeholders; use one of {}",
                filter.name,
                FILTERS.join(", ")
            )));
        }
        let args = self.args(&filter.args)?;
        Ok(filter_bound(filter.name, input, &args))
    }
}

/// What filter `name` can make of `input` and `args`.
fn filter_bound(name: &str, input: Size, args: &[Arg<'_>]) -> Size {
    // Whichever argument is the separator or the replacement, it is at
    // most the widest one.
    let widest = args.iter().fold(scalar(0), |acc, arg| acc.max(arg.size));
    match name {
        // Unicode case mapping can make a character longer (`ΐ` is three).
        "upper" | "lower" | "title" | "capitalize" => scalar(input.len.saturating_mul(4)),
        "trim" | "string" => scalar(input.len),
        "b64encode" => scalar(input.len.div_ceil(3).saturating_mul(4)),
        // An empty `old` puts `new` around every character.
        "replace" => scalar(input.len.saturating_mul(widest.len.saturating_add(1)).saturating_add(widest.len)),
        "join" => scalar(input.items.saturating_add(input.count.saturating_mul(widest.len))),
        "default" | "d" => input.max(widest),
        "first" | "last" => scalar(input.items),
        "int" | "float" => NUMBER.max(widest),
        "round" => {
            // Floats are written with `precision` digits; above 1074 the
            // value is kept as it is.
            let precision = args
                .iter()
                .find(|arg| matches!(arg.keyword, None | Some("precision")))
                .map_or(Some(0), |arg| match arg.expr {
                    Expr::Const(c) => i64::try_from(c.value.clone()).ok(),
                    _ => None,
                })
                .map_or(1074, |p| p.clamp(0, 1074) as u64);
            scalar(NUMBER.len + precision)
        }
        "length" | "count" => scalar(20),
        "abs" => NUMBER,
        _ => BOOL,
    }
}

/// Parses a placeholder's expression and checks its shape; with `values`,
/// also bounds the size of its result and of every step to `limit`.
fn analyze(
    expr: &str,
    raw: &str,
    values: Option<(&Values, bool)>,
    limit: u64,
    extra: &[&str],
) -> Result<u64, TemplateError> {
    let invalid = |reason: String| TemplateError::Invalid { placeholder: raw.to_owned(), reason };
    if expr.len() > MAX_EXPRESSION {
        return Err(invalid(format!("a placeholder may hold at most {MAX_EXPRESSION} characters")));
    }
    let ast = minijinja::machinery::parse_expr(expr).map_err(|e| invalid(e.to_string()))?;
    Ok(Walker { raw, values, limit, depth: Cell::new(0), extra }.walk(&ast)?.len)
}

/// Checks a template without values: syntax, namespaces, `armory` keys, and
/// what expressions may use.
pub fn check(text: &str) -> Result<(), TemplateError> {
    check_keys(text, &[])
}

/// [`check`] for an analysis query's `queryTemplate`, which may also name
/// the judgment run's window ([`ANALYSIS_KEYS`]).
pub fn check_query(text: &str) -> Result<(), TemplateError> {
    check_keys(text, ANALYSIS_KEYS)
}

/// [`check`] for a rollout driver's header values and body, which may also
/// name the action ([`DRIVER_KEYS`]).
pub fn check_driver(text: &str) -> Result<(), TemplateError> {
    check_keys(text, DRIVER_KEYS)
}

fn check_keys(text: &str, extra: &[&str]) -> Result<(), TemplateError> {
    for piece in pieces(text)? {
        let Piece::Placeholder { expr, raw, .. } = piece else { continue };
        match simple_path(expr) {
            Some(("armory", key)) if !ARMORY_KEYS.contains(&key) && !extra.contains(&key) => {
                return Err(armory_offers(raw, extra));
            }
            Some(("armory" | "context" | "artifacts" | "secrets", _)) => {}
            Some((ns, _)) => return Err(not_a_namespace(raw, ns)),
            None => {
                analyze(expr, raw, None, u64::MAX, extra)?;
            }
        }
    }
    Ok(())
}

/// Checks that `text` reads no secret `values` withholds (the secrets'
/// values are not needed, only their names): a file that names a secret
/// outside its allowed use is refused when it is read, not when it runs.
pub fn check_secret_uses(text: &str, values: &Values) -> Result<(), TemplateError> {
    for piece in pieces(text)? {
        let Piece::Placeholder { expr, raw, .. } = piece else { continue };
        match simple_path(expr) {
            Some(("secrets", key)) => {
                if let Some(reason) = values.withheld.get(key) {
                    return Err(withheld(key, reason));
                }
            }
            Some(_) => {}
            None => {
                analyze(expr, raw, Some((values, true)), u64::MAX, extra_keys(values))?;
            }
        }
    }
    Ok(())
}

/// Evaluates placeholders for one template: one environment, and the scope
/// expressions see built once, on first use.
struct Evaluator<'a> {
    values: &'a Values,
    mask: bool,
    limits: &'a RenderLimits,
    env: Environment<'static>,
    scope: OnceCell<Value>,
}

impl Evaluator<'_> {
    fn scope(&self) -> Value {
        self.scope
            .get_or_init(|| {
                let secrets: BTreeMap<String, String> = self
                    .values
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), if self.mask { MASK.to_owned() } else { v.expose().to_owned() }))
                    .collect();
                minijinja::context! {
                    armory => Value::from_object(self.values.armory.clone()),
                    context => Value::from_object(self.values.context.clone()),
                    artifacts => Value::from_object(self.values.artifacts.clone()),
                    secrets => Value::from_object(secrets),
                }
            })
            .clone()
    }

    fn lookup(&self, expr: &str, raw: &str) -> Result<String, TemplateError> {
        let unknown = |reason: String| TemplateError::Unknown { placeholder: raw.to_owned(), reason };
        let (values, mask) = (self.values, self.mask);
        if let Some((ns, key)) = simple_path(expr) {
            return match ns {
                "armory" => values.armory.get(key).cloned().ok_or_else(|| armory_offers(raw, extra_keys(values))),
                "context" => values.context.get(key).cloned().ok_or_else(|| {
                    unknown(format!(
                        "the context has no key {key:?} (set it in runWebhook.context, the file's context, or --context {key}=VALUE)"
                    ))
                }),
                "artifacts" => values.artifacts.get(key).cloned().ok_or_else(|| {
                    unknown(format!(
                        "no artifact named {key:?} (give it with --artifact {key}=REF, or in the file's artifacts)"
                    ))
                }),
                "secrets" => match values.secrets.get(key) {
                    Some(_) if mask => Ok(MASK.to_owned()),
                    Some(secret) => Ok(secret.expose().to_owned()),
                    None if values.withheld.contains_key(key) => Err(withheld(key, &values.withheld[key])),
                    None => Err(unknown(format!("no secret named {key:?} (store one with: borealis secrets set {key})"))),
                },
                other => Err(not_a_namespace(raw, other)),
            };
        }
        analyze(expr, raw, Some((values, mask)), self.limits.field_bytes as u64, extra_keys(values))?;
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| TemplateError::Invalid { placeholder: raw.to_owned(), reason: e.to_string() })?;
        let value = compiled.eval(self.scope()).map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => TemplateError::Invalid {
                placeholder: raw.to_owned(),
                reason: format!("it takes more work than the limit allows ({} fuel)", self.limits.fuel),
            },
            _ => unknown(e.to_string()),
        })?;
        if value.is_undefined() || value.is_none() {
            return Err(unknown("it evaluates to nothing".into()));
        }
        Ok(value.to_string())
    }
}

/// Characters a value may not carry unescaped into a path segment.
pub(crate) const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    // URL parsers read `\` as `/` in http(s) paths.
    .add(b'\\')
    .add(b'%');
/// Everything but unreserved characters, for query and fragment values.
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UriPart {
    /// Before `://`, or before the first `/` when there is none: the scheme,
    /// or a placeholder that is the whole base URL. Pasted as it is.
    Base,
    /// Between `://` and the path: host and port.
    Host,
    Path,
    Component,
}

/// Where `offset` lies in a URI template. `skeleton` is the template with
/// every placeholder blanked out, so that the text of an expression cannot
/// pass for a `/` or `?` of the URI.
fn uri_part(skeleton: &[u8], offset: usize) -> UriPart {
    let find = |from: usize, set: &[u8]| {
        skeleton[from..].iter().position(|b| set.contains(b)).map_or(skeleton.len(), |i| from + i)
    };
    let first = find(0, b"/?#");
    let authority =
        (first > 0 && skeleton[first - 1] == b':' && skeleton[first..].starts_with(b"//")).then_some(first + 2);
    let path_start = match authority {
        Some(start) if offset < start => return UriPart::Base,
        Some(start) => find(start, b"/?#"),
        None => first,
    };
    if offset < path_start {
        return if authority.is_some() { UriPart::Host } else { UriPart::Base };
    }
    if offset < find(path_start, b"?#") { UriPart::Path } else { UriPart::Component }
}

/// Only these keep a value from adding a port, userinfo or path to a host.
fn host_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// How string literals are written in a template's language.
struct Literals {
    quotes: &'static [u8],
    /// A quote inside which a backslash escapes nothing.
    raw: Option<u8>,
    /// What starts a comment to the end of the line, outside strings.
    comment: Option<u8>,
}

const JSON: Literals = Literals { quotes: b"\"", raw: None, comment: None };
const PROMQL: Literals = Literals { quotes: b"\"'`", raw: Some(b'`'), comment: Some(b'#') };

/// The quote of the string literal that `offset` in `template` lies in, if
/// any, skipping the placeholders' spans.
fn open_quote(template: &str, offset: usize, placeholders: &[(usize, usize)], syntax: &Literals) -> Option<u8> {
    let mut open: Option<u8> = None;
    let mut comment = false;
    let mut escaped = false;
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < offset {
        if let Some(&(_, end)) = placeholders.iter().find(|(start, _)| *start == i) {
            i = end;
            continue;
        }
        let b = bytes[i];
        match open {
            _ if comment => comment = b != b'\n',
            Some(_) if escaped => escaped = false,
            Some(q) if b == b'\\' && syntax.raw != Some(q) => escaped = true,
            Some(q) if b == q => open = None,
            Some(_) => {}
            None if syntax.comment == Some(b) => comment = true,
            None if syntax.quotes.contains(&b) => open = Some(b),
            None => {}
        }
        i += 1;
    }
    open
}

/// `value` inside a PromQL string literal quoted with `quote`: backslash,
/// the quote and line breaks escaped. A raw (backtick) string has no
/// escapes, so a backtick in the value is refused.
fn promql_escape(value: &str, quote: u8, raw: &str) -> Result<String, TemplateError> {
    if quote == b'`' {
        if value.contains('`') {
            return Err(TemplateError::Invalid {
                placeholder: raw.to_owned(),
                reason: "its value contains a backtick, which would end the query's raw string".into(),
            });
        }
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c as u32 == u32::from(quote) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Renders one template for `slot` within the default [`RenderLimits`].
/// With `mask`, secrets render as `********`.
pub fn render(template: &str, slot: Slot, values: &Values, mask: bool) -> Result<String, TemplateError> {
    render_with(template, slot, values, mask, &RenderLimits::default())
}

/// Renders one template for `slot` within `limits`.
pub fn render_with(
    template: &str,
    slot: Slot,
    values: &Values,
    mask: bool,
    limits: &RenderLimits,
) -> Result<String, TemplateError> {
    let parts = pieces(template)?;
    let spans: Vec<(usize, usize)> = parts
        .iter()
        .filter_map(|p| match p {
            Piece::Placeholder { raw, offset, .. } => Some((*offset, offset + raw.len())),
            Piece::Text(_) => None,
        })
        .collect();
    let mut skeleton = template.as_bytes().to_vec();
    for &(start, end) in &spans {
        skeleton[start..end].fill(b'x');
    }
    let evaluator = Evaluator { values, mask, limits, env: environment(limits.fuel), scope: OnceCell::new() };
    let limit = limits.field_bytes;
    let mut out = String::with_capacity(template.len().min(limit));
    for piece in parts {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder { expr, raw, offset } => {
                let value = evaluator.lookup(expr, raw)?;
                match slot {
                    Slot::Uri => match uri_part(&skeleton, offset) {
                        UriPart::Base => out.push_str(&value),
                        UriPart::Host if host_safe(&value) => out.push_str(&value),
                        UriPart::Host => {
                            return Err(TemplateError::Invalid {
                                placeholder: raw.to_owned(),
                                reason: "a placeholder in the URI's host may hold only letters, digits, '-' and '.', and may not be empty".into(),
                            });
                        }
                        UriPart::Path => out.extend(utf8_percent_encode(&value, PATH_SEGMENT)),
                        UriPart::Component => out.extend(utf8_percent_encode(&value, COMPONENT)),
                    },
                    Slot::HeaderValue => {
                        if value.contains(['\r', '\n', '\0']) {
                            return Err(TemplateError::Invalid {
                                placeholder: raw.to_owned(),
                                reason: "its value contains a line break, which would split the header".into(),
                            });
                        }
                        out.push_str(&value);
                    }
                    Slot::Body { json: false } => out.push_str(&value),
                    Slot::Query => match open_quote(template, offset, &spans, &PROMQL) {
                        Some(quote) => out.push_str(&promql_escape(&value, quote, raw)?),
                        // Outside a string a value is a name, a number or a
                        // duration; anything else would be query syntax.
                        None if value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_:.+-".contains(&b)) => {
                            out.push_str(&value)
                        }
                        None => {
                            return Err(TemplateError::Invalid {
                                placeholder: raw.to_owned(),
                                reason: format!(
                                    "outside a string literal a value may hold only letters, digits and _ : . + -, not {value:?}; put it in quotes"
                                ),
                            });
                        }
                    },
                    Slot::Body { json: true } => {
                        let quoted = serde_json::to_string(&value).expect("a string serializes");
                        if open_quote(template, offset, &spans, &JSON).is_some() {
                            out.push_str(&quoted[1..quoted.len() - 1]);
                        } else if serde_json::from_str::<serde_json::Value>(&value)
                            .is_ok_and(|v| !v.is_object() && !v.is_array())
                        {
                            out.push_str(&value);
                        } else {
                            out.push_str(&quoted);
                        }
                    }
                }
            }
        }
        // Checked as it grows: many placeholders, each within its bound, or
        // escaping, can still add up past the limit.
        if out.len() > limit {
            return Err(TemplateError::TooLarge { placeholder: None, size: out.len() as u64, limit: limit as u64 });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut v = Values::default();
        v.armory.insert("callbackUri".into(), "https://relay.example/callbacks/abc".into());
        v.context.insert("environment".into(), "staging & prod\"quoted\"".into());
        v.context.insert("team-name".into(), "a/b c".into());
        v.context.insert("count".into(), "5".into());
        v.secrets.insert("token".into(), Secret::new("s3cr3t"));
        v
    }

    #[test]
    fn artifacts_are_a_namespace_of_their_own() {
        let mut v = values();
        v.artifacts.insert("web".into(), "registry.example/shop:1.2.3".into());
        let body = render("{\"image\": \"{{artifacts.web}}\"}", Slot::Body { json: true }, &v, false).unwrap();
        assert_eq!(body, "{\"image\": \"registry.example/shop:1.2.3\"}");
        let upper = render("{{ artifacts.web | upper }}", Slot::HeaderValue, &v, false).unwrap();
        assert_eq!(upper, "REGISTRY.EXAMPLE/SHOP:1.2.3");
        let missing = render("{{artifacts.api}}", Slot::HeaderValue, &v, false).unwrap_err().to_string();
        assert!(missing.contains("no artifact named \"api\""), "{missing}");
        let whole = check("{{ artifacts }}").unwrap_err().to_string();
        assert!(whole.contains("every artifact"), "{whole}");
        assert!(check("{{artifacts.web}}").is_ok());
        // The driver's own keys are allowed in a driver's templates only.
        assert!(check_driver("{{armory.action}} {{armory.weight}}").is_ok());
        assert!(check("{{armory.action}}").is_err());
    }

    #[test]
    fn basic_auth_is_one_filter_and_backslashes_stay_in_their_segment() {
        let header = render("Basic {{ (\"user:\" ~ secrets.token) | b64encode }}", Slot::HeaderValue, &values(), false);
        assert_eq!(header.unwrap(), "Basic dXNlcjpzM2NyM3Q=");
        let mut v = values();
        v.context.insert("name".into(), r"a\..\admin".into());
        let url = render("https://ci/files/{{context.name}}", Slot::Uri, &v, false).unwrap();
        assert_eq!(url, "https://ci/files/a%5C..%5Cadmin");
        assert_eq!(url::Url::parse(&url).unwrap().path(), "/files/a%5C..%5Cadmin");
    }

    #[test]
    fn uri_values_are_encoded_by_position() {
        let url = render(
            "https://ci/{{context.team-name}}/x?cb={{armory.callbackUri}}&e={{context.environment}}",
            Slot::Uri,
            &values(),
            false,
        )
        .unwrap();
        assert_eq!(
            url,
            "https://ci/a%2Fb%20c/x?cb=https%3A%2F%2Frelay.example%2Fcallbacks%2Fabc&e=staging%20%26%20prod%22quoted%22"
        );
        assert_eq!(
            render("{{armory.callbackUri}}/callback", Slot::Uri, &values(), false).unwrap(),
            "https://relay.example/callbacks/abc/callback"
        );
    }

    #[test]
    fn header_values_refuse_line_breaks() {
        let mut v = values();
        v.context.insert("evil".into(), "x\r\nInjected: yes".into());
        let err = render("Bearer {{context.evil}}", Slot::HeaderValue, &v, false).unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
        assert_eq!(render("Bearer {{secrets.token}}", Slot::HeaderValue, &v, false).unwrap(), "Bearer s3cr3t");
        assert_eq!(render("Bearer {{secrets.token}}", Slot::HeaderValue, &v, true).unwrap(), "Bearer ********");
    }

    #[test]
    fn json_bodies_escape_strings_and_keep_scalars() {
        let body = render(
            r#"{"env": "{{context.environment}}", "n": {{context.count}}, "t": {{context.team-name}}}"#,
            Slot::Body { json: true },
            &values(),
            false,
        )
        .unwrap();
        assert_eq!(body, r#"{"env": "staging & prod\"quoted\"", "n": 5, "t": "a/b c"}"#);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["env"], "staging & prod\"quoted\"");
    }

    #[test]
    fn undefined_is_an_error_that_names_the_placeholder() {
        let err = render("x {{context.missing}}", Slot::Body { json: false }, &values(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown placeholder {{context.missing}}: the context has no key \"missing\" (set it in runWebhook.context, the file's context, or --context missing=VALUE)"
        );
        let err = render("{{secrets.nope}}", Slot::HeaderValue, &values(), false).unwrap_err();
        assert!(err.to_string().contains("borealis secrets set nope"), "{err}");
        assert!(check("{{armory.nope}}").unwrap_err().to_string().contains("armory offers callbackUri"));
        assert!(check("{{env.x}}").unwrap_err().to_string().contains("not a namespace"));
        assert_eq!(check("{% if x %}").unwrap_err(), TemplateError::Statement);
        assert!(matches!(check("{{ context.x "), Err(TemplateError::Unclosed(0))));
        assert_eq!(
            render("{{ context.environment | upper }}", Slot::Body { json: false }, &values(), false).unwrap(),
            "STAGING & PROD\"QUOTED\""
        );
        assert!(render("{{ context.nothere | upper }}", Slot::Body { json: false }, &values(), false).is_err());
    }

    fn text(template: &str) -> Result<String, TemplateError> {
        render(template, Slot::Body { json: false }, &values(), false)
    }

    #[test]
    fn bombs_are_refused_before_they_run() {
        let field = "placeholder ";
        for (bomb, reason) in [
            (
                "{{ range(10000)|join(range(10000)|join) }}",
                "function calls are not supported in placeholders: found range(...)",
            ),
            ("{{ \"x\" * 100000000 }}", "the * operator is not supported in placeholders"),
            ("{{ [\"x\"] * 100000000 }}", "the * operator is not supported"),
            ("{{ 9 ** 9 ** 9 }}", "the ** operator is not supported"),
        ] {
            let err = text(bomb).unwrap_err().to_string();
            assert!(err.starts_with(field) && err.contains(reason), "{bomb}: {err}");
            assert!(check(bomb).unwrap_err().to_string().contains(reason), "{bomb}");
        }
        // Each replace multiplies; the bound is computed from the real values.
        let e = "context.environment";
        for bomb in [
            format!("{{{{ {e}|replace(\"\", {e})|replace(\"\", {e})|replace(\"\", {e}) }}}}"),
            format!("{{{{ \"x\"{} }}}}", "|replace(\"\", \"xxxxxxxxxx\")".repeat(5)),
            format!("{{{{ {e}|join({e}|join({e}|join({e}))) }}}}"),
            // A small result does not excuse a large step.
            format!("{{{{ ({e}|replace('', {e})|replace('', {e})|replace('', {e})|replace('', {e})) == '' }}}}"),
            format!("{{{{ {e}|replace('', {e})|replace('', {e})|replace('', {e})|length }}}}"),
            format!("{{{{ 'a' if {e}|replace('', {e})|replace('', {e})|replace('', {e}) else 'b' }}}}"),
        ] {
            check(&bomb).unwrap();
            let err = text(&bomb).unwrap_err().to_string();
            assert!(err.starts_with(field) && err.ends_with("over the 64 KiB limit of one field"), "{bomb}: {err}");
            assert!(err.contains(" renders up to "), "{err}");
        }
    }

    #[test]
    fn whole_namespaces_and_functions_are_refused() {
        for (expr, reason) in [
            ("{{ secrets }}", "{{ secrets }} would render every secret; name one, as {{ secrets.NAME }}"),
            ("{{ secrets|items }}", "would render every secret"),
            ("{{ secrets|string }}", "would render every secret"),
            ("{{ 'token' in secrets }}", "would render every secret"),
            ("{{ secrets[context.count] }}", "would render every secret"),
            ("{{ secrets is mapping }}", "would render every secret"),
            ("{{ armory }}", "{{ armory }} would render every armory value; name one, as {{ armory.NAME }}"),
            ("{{ context|length }}", "{{ context }} would render the whole context"),
            ("{{ debug() }}", "debug() is unavailable in placeholders"),
            ("{{ range(3) }}", "function calls are not supported in placeholders: found range(...)"),
            ("{{ dict(a=1) }}", "found dict(...)"),
            ("{{ namespace() }}", "found namespace(...)"),
            ("{{ lipsum() }}", "found lipsum(...)"),
            ("{{ context.environment.upper() }}", "found upper(...)"),
            ("{{ \"x\" * 3 }}", "the * operator is not supported in placeholders"),
            ("{{ 2 ** 3 }}", "the ** operator is not supported in placeholders"),
            (
                "{{ context.environment|reverse }}",
                "the filter \"reverse\" is not available in placeholders; use one of upper, lower",
            ),
            ("{{ context.environment|tojson }}", "the filter \"tojson\" is not available"),
            ("{{ context.environment|pprint }}", "the filter \"pprint\" is not available"),
            ("{{ context.environment|dictsort }}", "the filter \"dictsort\" is not available"),
            ("{{ context.environment|list }}", "the filter \"list\" is not available"),
            ("{{ context.environment|replace(*[\"a\", \"b\"]) }}", "argument splats"),
            ("{{ env }}", "\"env\" is not a namespace"),
            ("{{ loop.index }}", "\"loop\" is not a namespace"),
            ("{{ env.x|upper }}", "\"env\" is not a namespace"),
            ("{{ armory[\"nope\"] }}", "armory offers callbackUri"),
            ("{{ armory.nope|upper }}", "armory offers callbackUri"),
        ] {
            let at_parse = check(expr).unwrap_err().to_string();
            assert!(at_parse.contains(reason), "{expr}: {at_parse}");
            let at_render = text(expr).unwrap_err().to_string();
            assert!(at_render.contains(reason), "{expr}: {at_render}");
            assert!(!at_render.contains("s3cr3t"), "{at_render}");
        }
    }

    #[test]
    fn long_or_deep_expressions_are_refused() {
        // 100,000 chained `~` overflow the parser's callers' stack.
        let deep = format!("{{{{ {} }}}}", vec!["1"; 100_000].join("~"));
        assert!(check(&deep).unwrap_err().to_string().contains("at most 2048 characters"));
        assert!(text(&deep).unwrap_err().to_string().contains("at most 2048 characters"));
        let deep = format!("{{{{ {} }}}}", vec!["1"; 1000].join("~"));
        assert!(check(&deep).unwrap_err().to_string().contains("it nests more than 64 operations deep"));
        let fine = format!("{{{{ {} }}}}", vec!["1"; 60].join("~"));
        assert_eq!(text(&fine).unwrap(), "1".repeat(60));
    }

    #[test]
    fn useful_expressions_still_render() {
        let mut v = values();
        v.context.insert("pick".into(), "b".into());
        for (expr, expected) in [
            ("{{ context.environment | upper }}", "STAGING & PROD\"QUOTED\""),
            ("{{ secrets.token }}", "s3cr3t"),
            ("{{ secrets[\"token\"] }}", "s3cr3t"),
            ("{{ secrets['token'] | upper }}", "S3CR3T"),
            ("{{ armory[\"callbackUri\"] }}", "https://relay.example/callbacks/abc"),
            ("{{ context.x | default(\"y\") }}", "y"),
            ("{{ context.x | d(context.count) }}", "5"),
            ("{{ context[\"team-name\"] | replace(\"/\", \"-\") | title }}", "A-B C"),
            ("{{ context.environment[:7] | capitalize }}", "Staging"),
            ("{{ 'prod' if context.environment is startingwith('staging') else 'dev' }}", "prod"),
            ("{{ {\"a\": \"alpha\", \"b\": \"beta\"}[context.pick] }}", "beta"),
            ("{{ [context.count, \"b\"] | join(\"-\") }}", "5-b"),
            ("{{ context.count | int + 1 }}", "6"),
            ("{{ (context.count | float / 2) | round(1) }}", "2.5"),
            ("{{ context.environment | length }}", "22"),
            ("{{ context.environment | first ~ context.environment | last }}", "s\""),
            ("{{ '  x ' | trim ~ context.count }}", "x5"),
            ("{{ context.count == '5' }}", "True"),
        ] {
            assert_eq!(render(expr, Slot::Body { json: false }, &v, false).unwrap(), expected, "{expr}");
        }
        assert_eq!(render("{{ secrets['token'] }}", Slot::HeaderValue, &v, true).unwrap(), MASK);
    }

    #[test]
    fn the_bound_holds_and_normal_templates_stay_under_it() {
        let mut v = values();
        v.context.insert("greek".into(), "ΐΰ".into());
        v.context.insert("controls".into(), "\u{1}\u{85}\t".into());
        v.context.insert("pi".into(), "-3.14159e-300".into());
        for expr in [
            "context.greek|upper",
            "context.greek|title",
            "context.greek|capitalize",
            "[context.controls, context.controls]",
            "(context.controls,)",
            "{context.controls: context.controls}",
            "context.environment|replace('', context.count)",
            "context.environment|join(context.count)",
            "[context.environment, context.count]|join('--')",
            "[context.environment]|first",
            "[[context.environment, context.environment, context.count]][0]|join(context.environment)",
            "{'a': [context.environment, context.count]}.a|join(context.environment)",
            "context.pi|float",
            "context.pi|float|round(300)",
            "context.pi|float / 7",
            "context.count|int - 99999999999999999999",
            "context.environment ~ context.count + context.count",
            "[context.count] + [context.environment]",
            "context.missing|default(context.environment)",
            "context.environment and context.count",
            "secrets.token|upper",
        ] {
            let bound = analyze(expr, expr, Some((&v, false)), u64::MAX, &[]).unwrap();
            let rendered = render(&format!("{{{{ {expr} }}}}"), Slot::Body { json: false }, &v, false).unwrap();
            assert!(rendered.len() as u64 <= bound, "{expr}: {rendered:?} is over {bound}");
            assert!(bound <= RenderLimits::default().field_bytes as u64, "{expr}: {bound}");
        }
        // `mask` bounds a secret at the mask's length.
        assert_eq!(analyze("secrets.token ~ ''", "", Some((&v, true)), u64::MAX, &[]).unwrap(), MASK.len() as u64);
        for number in [Value::from(-5e-324), Value::from(-f64::MAX), Value::from(i128::MIN), Value::from(u128::MAX)] {
            assert!(number.to_string().len() as u64 <= NUMBER.len, "{number}");
        }
    }

    #[test]
    fn the_rendered_field_is_checked_too() {
        let small = RenderLimits { field_bytes: 16, ..RenderLimits::default() };
        let plain = Slot::Body { json: false };
        let err = render_with("aaaaaaaaaa {{context.count}} aaaaaaaaaa", plain, &values(), false, &small).unwrap_err();
        assert_eq!(err.to_string(), "renders at least 23 bytes, over the 16 bytes limit of one field");
        // Each value fits; escaping them does not.
        let mut v = values();
        v.context.insert("quotes".into(), "\"".repeat(8));
        let json = Slot::Body { json: true };
        assert!(render_with("\"{{context.quotes}}\"", json, &v, false, &small).is_err());
        assert_eq!(render_with("\"{{context.quotes}}\"", plain, &v, false, &small).unwrap(), "\"".repeat(10));
        let err = render(&"a".repeat(70 * 1024), plain, &v, false).unwrap_err();
        assert_eq!(err.to_string(), "renders at least 70 KiB, over the 64 KiB limit of one field");
    }

    #[test]
    fn fuel_is_limited() {
        let starved = RenderLimits { fuel: 1, ..RenderLimits::default() };
        let err = render_with("{{ context.environment | upper }}", Slot::HeaderValue, &values(), false, &starved)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "placeholder {{ context.environment | upper }}: it takes more work than the limit allows (1 fuel)"
        );
        // The default pays for a result near the field limit.
        let mut v = values();
        v.context.insert("big".into(), "a".repeat(20_000));
        let out = render("{{ context.big | replace('a', 'bc') }}", Slot::Body { json: false }, &v, false).unwrap();
        assert_eq!(out.len(), 40_000);
    }

    #[test]
    fn a_placeholder_in_the_host_cannot_change_host_port_or_path() {
        let mut v = values();
        for evil in ["a.com:9/x", "a.com/x", "a.com?x", "a.com#x", "user@a.com", "a.com%2f", "[::1]", "a.com x", ""] {
            v.context.insert("host".into(), evil.into());
            for template in [
                "https://{{context.host}}/x",
                "https://{{ context.host | lower }}.example/x",
                "https://a.{{context.host}}",
            ] {
                let err = render(template, Slot::Uri, &v, false).unwrap_err();
                assert!(
                    err.to_string()
                        .contains("a placeholder in the URI's host may hold only letters, digits, '-' and '.'"),
                    "{evil:?}: {err}"
                );
            }
        }
        v.context.insert("host".into(), "a-1.example.com".into());
        v.context.insert("port".into(), "8443".into());
        let url =
            render("https://{{context.host}}:{{context.port}}/x?q={{context.host}}", Slot::Uri, &v, false).unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!((parsed.host_str(), parsed.port(), parsed.path()), (Some("a-1.example.com"), Some(8443), "/x"));
        // The expression's own text does not count as the URI's `/`.
        v.context.insert("host".into(), "a.com/x".into());
        assert_eq!(
            render("https://{{ context.host|replace('/', '') }}/y", Slot::Uri, &v, false).unwrap(),
            "https://a.comx/y"
        );
        // A placeholder before `://` is the user's base URL, pasted as it is;
        // what follows it is still encoded.
        v.context.insert("base".into(), "https://a.com:9/x?".into());
        assert_eq!(render("{{context.base}}", Slot::Uri, &v, false).unwrap(), "https://a.com:9/x?");
        assert_eq!(
            render("{{context.base}}/{{context.team-name}}?e={{context.environment}}", Slot::Uri, &v, false).unwrap(),
            "https://a.com:9/x?/a%2Fb%20c?e=staging%20%26%20prod%22quoted%22"
        );
        v.context.insert("scheme".into(), "http".into());
        assert_eq!(render("{{context.scheme}}://ci/x", Slot::Uri, &v, false).unwrap(), "http://ci/x");
    }

    #[test]
    fn sizes_read_in_human_units() {
        assert_eq!(human(100), "100 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(64 * 1024), "64 KiB");
        assert_eq!(human(64 * 1024 + 1), "64.1 KiB");
        assert_eq!(human(388_900_000), "370.9 MiB");
        assert_eq!(human(u64::MAX), "16 EiB");
    }

    #[test]
    fn analysis_queries_render_the_window_and_webhooks_do_not_get_it() {
        let mut v = values();
        for key in ANALYSIS_KEYS {
            v.armory.insert((*key).into(), "60".into());
        }
        let plain = Slot::Body { json: false };
        assert_eq!(render("rate(x[{{armory.promQlStepInterval}}])", plain, &v, false).unwrap(), "rate(x[60])");
        assert_eq!(render("{{ armory.intervalSeconds | int + 1 }}", plain, &v, false).unwrap(), "61");
        assert!(check_query("{{ armory.endTimeEpochSeconds | int }}").is_ok());
        let err = check("{{ armory.endTimeEpochSeconds | int }}").unwrap_err().to_string();
        assert!(err.contains("armory offers callbackUri") && !err.contains("promQlStepInterval"), "{err}");
        let err = render("{{ armory.intervalSeconds }}", plain, &values(), false).unwrap_err().to_string();
        assert!(err.contains("unknown placeholder {{ armory.intervalSeconds }}"), "{err}");
    }

    fn keyring() -> Keyring {
        let mut keys = Keyring::default();
        keys.insert("token", Secret::new("s3cr3t"), SecretUse::default_uses());
        keys.insert("team_key", Secret::new("team-signing-key"), Uses::from([SecretUse::Signing]));
        keys.insert("relay_sign", Secret::new("relay-key"), Uses::from(SecretUse::ALL));
        keys.insert("prom", Secret::new("prom-token"), Uses::from([SecretUse::Webhooks, SecretUse::Providers]));
        keys
    }

    #[test]
    fn a_template_reads_only_secrets_marked_for_its_use() {
        let keys = keyring();
        let v = keys.values(SecretUse::Webhooks, Some("relay_sign"), BTreeMap::new(), BTreeMap::new());
        assert_eq!(v.secrets.keys().collect::<Vec<_>>(), ["prom", "token"]);
        assert_eq!(render("{{secrets.prom}}", Slot::HeaderValue, &v, false).unwrap(), "prom-token");
        let err = render("Bearer {{secrets.team_key}}", Slot::HeaderValue, &v, false).unwrap_err();
        assert_eq!(err.to_string(), "secret \"team_key\" may not be used in webhooks (it is marked for signing)");
        // The relay's own key, whatever its marks; also inside expressions.
        for template in [
            "{{secrets.relay_sign}}",
            "{{ secrets['relay_sign'] }}",
            "Basic {{ (\"u:\" ~ secrets.relay_sign) | b64encode }}",
            "{{ secrets.relay_sign | upper }}",
        ] {
            let err = render(template, Slot::HeaderValue, &v, false).unwrap_err().to_string();
            assert_eq!(
                err,
                "secret \"relay_sign\" may not be used in webhooks (it is the relay's own signing key, webhook_signing_secret)",
                "{template}"
            );
            assert_eq!(check_secret_uses(template, &v).unwrap_err().to_string(), err, "{template}");
            assert!(check(template).is_ok(), "without marks, only the shape is checked: {template}");
        }
        assert!(check_secret_uses("Bearer {{secrets.token}} {{context.missing}} {{secrets.unknown}}", &v).is_ok());
        // Providers read only their own.
        let p = keys.values(SecretUse::Providers, Some("relay_sign"), BTreeMap::new(), BTreeMap::new());
        assert_eq!(p.secrets.keys().collect::<Vec<_>>(), ["prom"]);
        let err = render("{{secrets.token}}", Slot::HeaderValue, &p, false).unwrap_err();
        assert_eq!(err.to_string(), "secret \"token\" may not be used in metric providers (it is marked for webhooks)");
        // Without a relay key, a secret marked for everything is readable everywhere.
        let open = keys.values(SecretUse::Webhooks, None, BTreeMap::new(), BTreeMap::new());
        assert_eq!(render("{{secrets.relay_sign}}", Slot::HeaderValue, &open, false).unwrap(), "relay-key");
        // Signing: the relay's key may sign; a webhooks-only secret may not.
        assert!(matches!(keys.get_for("relay_sign", SecretUse::Signing, Some("relay_sign")), Some(Ok(_))));
        assert_eq!(
            keys.get_for("token", SecretUse::Signing, None).unwrap().unwrap_err(),
            "may not be used for signing (it is marked for webhooks)"
        );
        assert!(keys.get_for("absent", SecretUse::Signing, None).is_none());
    }

    #[test]
    fn uses_read_and_write_as_stored() {
        let uses: Uses = ["webhooks", "providers"].iter().map(|u| u.parse().unwrap()).collect();
        assert_eq!(SecretUse::join(&uses), "webhooks,providers");
        assert_eq!(
            "bogus".parse::<SecretUse>().unwrap_err(),
            "unknown secret use \"bogus\": use webhooks, signing or providers"
        );
        assert_eq!(serde_json::to_string(&SecretUse::Signing).unwrap(), "\"signing\"");
    }

    #[test]
    fn query_values_cannot_leave_their_promql_string() {
        let mut v = values();
        v.context.insert("job".into(), "\"} or vector(1) #".into());
        v.context.insert("path".into(), "a\\b'c\nd".into());
        let q = |t: &str, v: &Values| render(t, Slot::Query, v, false);
        assert_eq!(q("up{job=\"{{context.job}}\"}", &v).unwrap(), "up{job=\"\\\"} or vector(1) #\"}");
        assert_eq!(q("up{p='{{context.path}}'}", &v).unwrap(), "up{p='a\\\\b\\'c\\nd'}");
        assert_eq!(q("up{p=\"{{context.path}}\"}", &v).unwrap(), "up{p=\"a\\\\b'c\\nd\"}");
        // Outside a string, a value is a name, a number or a duration.
        assert_eq!(q("sum(rate({{context.count}}[5m]))", &v).unwrap(), "sum(rate(5[5m]))");
        v.context.insert("window".into(), "5m".into());
        assert_eq!(q("rate(x[{{context.window}}])", &v).unwrap(), "rate(x[5m])");
        v.context.insert("window".into(), "5m]) or vector(1) #".into());
        let err = q("rate(x[{{context.window}}])", &v).unwrap_err().to_string();
        assert!(err.contains("outside a string literal"), "{err}");
        // An escaped quote and a comment's quote do not end or start a string.
        assert_eq!(q("up{a=\"x\\\"{{context.job}}\"}", &v).unwrap(), "up{a=\"x\\\"\\\"} or vector(1) #\"}");
        assert_eq!(q("# it's\nup{a=\"{{context.count}}\"}", &v).unwrap(), "# it's\nup{a=\"5\"}");
        assert_eq!(q("up{a=`{{context.path}}`}", &v).unwrap(), "up{a=`a\\b'c\nd`}");
        v.context.insert("tick".into(), "`) or vector(1)".into());
        let err = q("up{a=`{{context.tick}}`}", &v).unwrap_err().to_string();
        assert!(err.contains("backtick"), "{err}");
    }
}
