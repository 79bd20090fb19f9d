//! L1: the experiment file (TOML) -> a checked [`ExperimentSpec`], or every error at once,
//! each as `file:line:col: message`.
//!
//! Uses only `domain`. The format is the user contract of CONFIG.md: unknown keys are
//! errors with a suggestion, and keys of a later version are refused by name.

mod expr;
mod jobs;
pub mod schema;
mod stopping;
pub use jobs::DEFAULT_STATUS_WORDS;
mod walk;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::domain::*;
use walk::{
    as_array, as_duration, as_positive_duration, as_str, did_you_mean, kind, not_an_integer, parse_float, parse_int,
    Ctx, Table, SV,
};

/// Placeholders that every command can use besides the parameters.
pub const RESERVED_PLACEHOLDERS: [&str; 5] = ["trial", "trial_dir", "experiment", "params_file", "slot"];

/// The placeholders `{name}` of a command (not the reserved ones), in order, once each.
pub fn placeholders_of(command: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for seg in expr::template(command)?.segments {
        if let Segment::Placeholder(p) = seg {
            if !RESERVED_PLACEHOLDERS.contains(&p.as_str()) && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// One error in the experiment file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

/// Every error found in a file, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
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

impl std::error::Error for ConfigErrors {}

/// Read and check an experiment file.
pub fn load(path: &Path) -> Result<(ExperimentSpec, String), ConfigErrors> {
    let display = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: display.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let base =
        path.canonicalize().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("."));
    let spec = parse(&src, &display, &base)?;
    Ok((spec, src))
}

/// Check the text of an experiment file whose relative paths are relative to `base_dir`.
pub fn parse(src: &str, file: &str, base_dir: &Path) -> Result<ExperimentSpec, ConfigErrors> {
    let mut ctx = Ctx::new(src, file.to_string());
    let (root, syntax) = DeTable::parse_recoverable(src);
    // After a syntax error the parser's recovery reports echoes of it: the earliest one is
    // the one to fix (the rest of the file is checked once it parses).
    if let Some(e) = syntax.iter().min_by_key(|e| e.span().map_or(0, |s| s.start)) {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        ctx.err(span, format!("invalid TOML: {msg}"));
        return Err(ConfigErrors(ctx.errors));
    }
    let root_span = root.span();
    let root = Table::from_de("", root_span, root.get_ref());
    let spec = read_root(&mut ctx, &root, base_dir);
    match spec {
        Some(mut spec) if ctx.errors.is_empty() => {
            spec.warnings = ctx.warnings.iter().map(|w| w.to_string()).collect();
            Ok(spec)
        }
        _ => {
            if ctx.errors.is_empty() {
                ctx.err(0..0, "the file is not a valid experiment");
            }
            ctx.errors.sort_by_key(|e| (e.line, e.col));
            Err(ConfigErrors(ctx.errors))
        }
    }
}

/// The parts of two experiment files that may not change on resume (parameters,
/// objective, constraints, runner, metrics, name), compared as parsed: one line per
/// difference. Orchestration, generation, stopping and storage may change freely.
pub fn fixed_part_changes(old: &str, new: &str) -> Vec<String> {
    let parse = |s: &str| s.parse::<toml::Table>().unwrap_or_default();
    let (old, new) = (parse(old), parse(new));
    let mut out = Vec::new();
    for section in ["experiment", "parameters", "objective", "constraints", "runner", "metrics"] {
        let get = |t: &toml::Table| t.get(section).and_then(|v| v.as_table()).cloned().unwrap_or_default();
        let (a, b) = (get(&old), get(&new));
        // Keys of either side, each once, in the order they appear.
        let mut keys: Vec<&String> = a.keys().collect();
        keys.extend(b.keys().filter(|k| !a.contains_key(*k)));
        for k in keys {
            // Of [experiment], only the name is fixed (description, owner, seed may change).
            if section == "experiment" && k != "name" {
                continue;
            }
            let show = |v: Option<&toml::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into());
            if a.get(k) != b.get(k) {
                out.push(format!("[{section}] {k}: {} -> {}", show(a.get(k)), show(b.get(k))));
            }
        }
    }
    out
}

const ROOT_KEYS: [&str; 11] = [
    "experiment",
    "parameters",
    "objective",
    "constraints",
    "runner",
    "metrics",
    "orchestration",
    "generation",
    "storage",
    "early_stopping",
    "global_stopping",
];

fn read_root(ctx: &mut Ctx, root: &Table, base: &Path) -> Option<ExperimentSpec> {
    root.check_keys(ctx, &ROOT_KEYS, &[]);
    let table = |ctx: &mut Ctx, key: &str, required: bool| -> Option<Table> {
        match root.get(key) {
            Some(v) => Table::of(ctx, key, v),
            None => {
                if required {
                    ctx.err(0..0, format!("missing table `[{key}]`"));
                }
                None
            }
        }
    };
    let experiment = table(ctx, "experiment", true);
    let parameters = table(ctx, "parameters", true);
    let objective = table(ctx, "objective", true);
    let constraints = table(ctx, "constraints", false);
    let runner = table(ctx, "runner", true);
    let metrics = table(ctx, "metrics", false);
    let orchestration = table(ctx, "orchestration", true);
    let generation = table(ctx, "generation", false);
    let storage = table(ctx, "storage", false);
    let early_stopping = table(ctx, "early_stopping", false);
    let global_stopping = table(ctx, "global_stopping", false);

    let header = experiment.as_ref().and_then(|t| read_experiment(ctx, t));
    let mut space = parameters.as_ref().map(|t| read_parameters(ctx, t)).unwrap_or_default();
    let objective = objective.as_ref().and_then(|t| read_objective(ctx, t));
    let mut outcome_constraints = Vec::new();
    if let Some(c) = &constraints {
        c.check_keys(ctx, &["parameters", "outcomes"], &[]);
        space.constraints = read_parameter_constraints(ctx, c, &space);
        outcome_constraints = read_outcome_constraints(ctx, c);
    }
    let mut metric_rules = BTreeMap::new();
    if let Some(m) = &metrics {
        for (k, span, v) in &m.entries {
            if !is_metric_name(k) {
                ctx.err(
                    span.clone(),
                    format!(
                        "`{k}` is not a usable metric name (letters, digits, `_` and `.`, not starting with a digit)"
                    ),
                );
            }
            if let Some(rule) = read_metric_rule(ctx, k, v, base) {
                metric_rules.insert(k.to_string(), rule);
            }
        }
    }
    for c in &outcome_constraints {
        metric_rules.entry(c.metric.clone()).or_insert(MetricRule::Default);
    }
    metric_rules.entry("cost".to_string()).or_insert(MetricRule::Default);
    if let Some((goal, span)) = &objective {
        for m in goal.metrics() {
            metric_rules.entry(m.to_string()).or_insert(MetricRule::Default);
            if outcome_constraints.iter().any(|c| c.metric == m) {
                ctx.err(
                    span.clone(),
                    format!("`{m}` is optimized and cannot also be an outcome constraint (for a Pareto front, bound it with `objective.thresholds`)"),
                );
            }
        }
    }
    let runner = runner.as_ref().and_then(|t| read_runner(ctx, t, &space, base));
    let is_command = matches!(runner, Some(RunnerSpec::Command(_)));
    let orchestration = orchestration.as_ref().and_then(|t| read_orchestration(ctx, t, is_command));
    let generation = read_generation(ctx, generation.as_ref(), &space);
    let name = header.as_ref().map(|h| h.0.clone()).unwrap_or_default();
    let (store, durability) = read_storage(ctx, storage.as_ref(), base, &name);
    let (name, description, owner, seed) = header?;
    let (goal, _) = objective?;
    let early_stopping = match &early_stopping {
        Some(t) => Some(stopping::read_early_stopping(ctx, t, &goal, &outcome_constraints, &metric_rules)?),
        None => None,
    };
    let global_stopping = match &global_stopping {
        Some(t) => Some(stopping::read_global_stopping(ctx, t, &goal)?),
        None => None,
    };
    let (runner, orchestration) = (runner?, orchestration?);
    Some(ExperimentSpec {
        name,
        description,
        owner,
        seed,
        space,
        goal,
        outcome_constraints,
        metrics: metric_rules,
        runner,
        orchestration,
        generation: generation?,
        store,
        durability,
        base_dir: base.to_path_buf(),
        warnings: Vec::new(),
        early_stopping,
        global_stopping,
    })
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn is_metric_name(s: &str) -> bool {
    is_identifier(&s.replace('.', "_"))
}

type ExperimentHeader = (String, Option<String>, Option<String>, Option<u64>);

fn read_experiment(ctx: &mut Ctx, t: &Table) -> Option<ExperimentHeader> {
    t.check_keys(ctx, &["name", "description", "owner", "seed"], &[]);
    let name = t.require(ctx, "name").and_then(|v| as_str(ctx, v, "experiment.name"));
    if let (Some(n), Some(v)) = (name, t.get("name")) {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            ctx.err(
                v.span(),
                format!("`experiment.name` must use only letters, digits, `_`, `.` and `-`, not \"{n}\""),
            );
        }
    }
    let description = t.str(ctx, "description").map(str::to_string);
    let owner = t.str(ctx, "owner").map(str::to_string);
    let seed = t.i64_where(ctx, "seed", "a non-negative integer", |x| x >= 0).map(|x| x as u64);
    Some((name?.to_string(), description, owner, seed))
}

fn read_parameters(ctx: &mut Ctx, t: &Table) -> SearchSpace {
    let mut parameters = Vec::new();
    // Each parameter reaches the trial as OPTX_PARAM_<NAME>: two names must not meet there.
    let mut env_names: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (name, span, v) in &t.entries {
        let path = format!("parameters.{name}");
        let var = crate::domain::param_env_var(name);
        if let Some(other) = env_names.insert(var.clone(), name) {
            ctx.err(
                span.clone(),
                format!("parameters `{other}` and `{name}` would both reach the trial as the environment variable {var}: rename one"),
            );
        }
        if !is_identifier(name) {
            ctx.err(
                span.clone(),
                format!("`{name}` is not a usable parameter name (letters, digits and `_`, not starting with a digit)"),
            );
        } else if RESERVED_PLACEHOLDERS.contains(name) {
            ctx.err(span.clone(), format!("`{name}` is a reserved placeholder and cannot name a parameter"));
        }
        let Some(p) = Table::of(ctx, &path, v) else { continue };
        if let Some(domain) = read_domain(ctx, &p) {
            parameters.push(Parameter { name: name.to_string(), domain });
        }
    }
    if t.entries.is_empty() {
        ctx.err(t.span.clone(), "`[parameters]` is empty: name at least one parameter to search");
    } else if !parameters.is_empty() && parameters.iter().all(|p| !p.is_searched()) {
        ctx.err(t.span.clone(), "every parameter is fixed: at least one must be searched");
    }
    SearchSpace { parameters, constraints: Vec::new() }
}

const LATER_PARAMETER_KEYS: [(&str, &str); 4] = [
    ("depends_on", "conditional (hierarchical) search spaces are not in this version of optx"),
    ("condition", "conditional (hierarchical) search spaces are not in this version of optx"),
    ("is_fidelity", "multi-fidelity optimization is not in this version of optx"),
    ("fidelity", "multi-fidelity optimization is not in this version of optx"),
];

fn read_domain(ctx: &mut Ctx, p: &Table) -> Option<Domain> {
    let ty = p.require(ctx, "type")?;
    let ty_s = as_str(ctx, ty, &p.path("type"))?;
    match ty_s {
        "float" => {
            p.check_keys(ctx, &["type", "bounds", "scaling", "step", "digits"], &LATER_PARAMETER_KEYS);
            read_range(ctx, p, false)
        }
        "int" => {
            p.check_keys(ctx, &["type", "bounds", "scaling", "step"], &LATER_PARAMETER_KEYS);
            read_range(ctx, p, true)
        }
        "choice" => {
            p.check_keys(ctx, &["type", "values", "ordered"], &LATER_PARAMETER_KEYS);
            let vv = p.require(ctx, "values")?;
            let arr = as_array(ctx, vv, &p.path("values"))?;
            let mut values: Vec<Value> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for item in arr {
                if nul(ctx, item, &p.path("values")) {
                    return None;
                }
                let Some(v) = scalar(item.get_ref()) else {
                    ctx.err(
                        item.span(),
                        format!(
                            "`{}` holds strings, integers, floats or booleans, not {}",
                            p.path("values"),
                            kind(item.get_ref())
                        ),
                    );
                    return None;
                };
                if let Some(first) = values.first() {
                    if first.kind() != v.kind() {
                        ctx.err(
                            item.span(),
                            format!(
                                "`{}` must all be of one kind: {} is {}, the first is {}",
                                p.path("values"),
                                v,
                                v.kind(),
                                first.kind()
                            ),
                        );
                        return None;
                    }
                }
                if !seen.insert(v.to_string()) {
                    ctx.err(item.span(), format!("`{}` holds {v} twice", p.path("values")));
                    return None;
                }
                values.push(v);
            }
            if values.len() < 2 {
                ctx.err(
                    vv.span(),
                    format!("`{}` needs at least two values (use type = \"fixed\" for one)", p.path("values")),
                );
                return None;
            }
            let ordered = p.bool(ctx, "ordered").unwrap_or(false);
            Some(Domain::Choice { values, ordered })
        }
        "fixed" => {
            p.check_keys(ctx, &["type", "value"], &LATER_PARAMETER_KEYS);
            let v = p.require(ctx, "value")?;
            if nul(ctx, v, &p.path("value")) {
                return None;
            }
            match scalar(v.get_ref()) {
                Some(value) => Some(Domain::Fixed { value }),
                None => {
                    ctx.err(v.span(), format!("`{}` must be a string, number or boolean", p.path("value")));
                    None
                }
            }
        }
        other => {
            ctx.err(
                ty.span(),
                format!(
                    "`{}` must be \"float\", \"int\", \"choice\" or \"fixed\", not \"{other}\"{}",
                    p.path("type"),
                    did_you_mean(other, ["float", "int", "choice", "fixed"])
                ),
            );
            None
        }
    }
}

/// A float or int range: the rules of both are checked on the numbers once.
fn read_range(ctx: &mut Ctx, p: &Table, int: bool) -> Option<Domain> {
    let log = matches!(p.one_of(ctx, "scaling", &["linear", "log"]), Some("log"));
    let bounds_v = p.require(ctx, "bounds")?;
    let arr = as_array(ctx, bounds_v, &p.path("bounds"))?;
    let bounds = p.path("bounds");
    if arr.len() != 2 {
        ctx.err(bounds_v.span(), format!("`{bounds}` must be [low, high]"));
        return None;
    }
    let ints = (parse_int(arr[0].get_ref()), parse_int(arr[1].get_ref()));
    let (lo, hi) = match (int, ints, parse_float(arr[0].get_ref()), parse_float(arr[1].get_ref())) {
        (true, (Some(lo), Some(hi)), _, _) if lo.abs() <= MAX_INT_BOUND && hi.abs() <= MAX_INT_BOUND => {
            (lo as f64, hi as f64)
        }
        (true, (Some(_), Some(_)), _, _) => {
            ctx.err(
                bounds_v.span(),
                format!("`{bounds}` of an int parameter must lie within ±{MAX_INT_BOUND} (2^53, the largest integers a float holds exactly)"),
            );
            return None;
        }
        (true, _, _, _) => {
            let bad = arr.iter().find(|v| parse_int(v.get_ref()).is_none()).map(|v| v.get_ref());
            match bad {
                Some(v @ DeValue::Integer(_)) => ctx.err(bounds_v.span(), not_an_integer(v, &bounds)),
                _ => ctx.err(bounds_v.span(), format!("`{bounds}` of an int parameter must be two integers")),
            }
            return None;
        }
        (false, _, Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => (lo, hi),
        (false, _, _, _) => {
            ctx.err(bounds_v.span(), format!("`{bounds}` must be two finite numbers"));
            return None;
        }
    };
    let num = |x: f64| Value::Float(x).to_string();
    if !(hi - lo).is_finite() {
        ctx.err(
            bounds_v.span(),
            format!(
                "`{bounds}`: the range [{}, {}] is too wide to search (its width overflows a float)",
                num(lo),
                num(hi)
            ),
        );
        return None;
    }
    if lo >= hi {
        ctx.err(bounds_v.span(), format!("`{bounds}`: the low bound {lo} must be below the high bound {hi}"));
        return None;
    }
    if log && lo <= 0.0 {
        ctx.err(bounds_v.span(), format!("`{bounds}`: log scaling needs a low bound above 0, not {lo}"));
        return None;
    }
    let step = if int {
        p.i64_where(ctx, "step", "a positive integer", |s| s > 0).map(|s| s as f64)
    } else {
        p.f64_where(ctx, "step", "a positive number", |s| s > 0.0 && s.is_finite())
    };
    if let Some(s) = step {
        let k = (hi - lo) / s;
        let step_at = p.get("step")?.span();
        if k.is_nan() || k > MAX_INT_BOUND as f64 {
            ctx.err(
                step_at,
                format!(
                    "`{}` = {} is too small for [{}, {}]: more than 2^53 steps (use no step for a continuous range)",
                    p.path("step"),
                    num(s),
                    num(lo),
                    num(hi)
                ),
            );
            return None;
        }
        if (k - k.round()).abs() > 1e-6 * k.max(1.0) {
            ctx.err(step_at, format!("`{}` = {s} does not divide the range [{lo}, {hi}]", p.path("step")));
            return None;
        }
        if log {
            ctx.err(step_at, format!("`{}`: a step cannot be combined with log scaling", p.path("step")));
            return None;
        }
    }
    if int {
        return Some(Domain::Int { lo: lo as i64, hi: hi as i64, log, step: step.map(|s| s as i64) });
    }
    let digits = p
        .i64_where(ctx, "digits", "an integer from 1 to 17", |d| (1..=17).contains(&d))
        .map_or(crate::domain::DEFAULT_DIGITS, |d| d as u32);
    Some(Domain::Float { lo, hi, log, step, digits })
}

/// Report a string with a NUL byte, which no program can receive.
fn nul(ctx: &mut Ctx, v: &SV, what: &str) -> bool {
    let bad = matches!(v.get_ref(), DeValue::String(s) if s.contains('\0'));
    if bad {
        ctx.err(v.span(), format!("`{what}` holds a NUL byte, which cannot reach a program"));
    }
    bad
}

fn scalar(v: &DeValue) -> Option<Value> {
    match v {
        // A NUL byte cannot reach a program (arguments and environment end at it).
        DeValue::String(s) if s.contains('\0') => None,
        DeValue::String(s) => Some(Value::Str(s.to_string())),
        DeValue::Integer(_) => parse_int(v).map(Value::Int),
        DeValue::Float(_) => parse_float(v).map(Value::Float),
        DeValue::Boolean(b) => Some(Value::Bool(*b)),
        _ => None,
    }
}

/// One objective: a metric name or a weighted sum of metrics.
fn read_one_objective(ctx: &mut Ctx, v: &SV, path: &str, direction: Direction) -> Option<Objective> {
    match v.get_ref() {
        DeValue::String(s) if is_metric_name(s.trim()) => Some(Objective::metric(s.trim(), direction)),
        DeValue::String(s) => match expr::weighted_sum(s) {
            Ok(terms) => {
                if let Some((bad, _)) = terms.iter().find(|(m, _)| !is_metric_name(m)) {
                    ctx.err(v.span(), format!("`{path}`: \"{s}\": `{bad}` is not a usable metric name"));
                    return None;
                }
                let name = s.split_whitespace().collect::<Vec<_>>().join(" ");
                Some(Objective { name, terms, direction })
            }
            Err(e) => {
                ctx.err(
                    v.span(),
                    format!("`{path}`: \"{s}\" is neither a metric name nor a weighted sum of metrics: {e}"),
                );
                None
            }
        },
        other => {
            ctx.err(
                v.span(),
                format!(
                    "`{path}` must be a metric name, a weighted sum of metrics or a list of them, not {}",
                    kind(other)
                ),
            );
            None
        }
    }
}

/// `[objective]`: `minimize` and/or `maximize`, each one objective or a list; with more
/// than one objective, `thresholds` bound the Pareto front.
fn read_objective(ctx: &mut Ctx, t: &Table) -> Option<(Goal, std::ops::Range<usize>)> {
    t.check_keys(ctx, &["minimize", "maximize", "thresholds"], &[]);
    let mut objectives = Vec::new();
    let mut span = None;
    for (key, direction) in [("minimize", Direction::Minimize), ("maximize", Direction::Maximize)] {
        let Some(v) = t.get(key) else { continue };
        span.get_or_insert(v.span());
        let path = t.path(key);
        let items: Vec<&SV> = match v.get_ref() {
            DeValue::Array(a) if a.is_empty() => {
                ctx.err(v.span(), format!("`{path}` is an empty list: name at least one metric"));
                continue;
            }
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![v],
        };
        for item in items {
            if let Some(o) = read_one_objective(ctx, item, &path, direction) {
                objectives.push((o, item.span()));
            }
        }
    }
    let Some(span) = span else {
        ctx.err(t.span.clone(), "`[objective]` needs `minimize = \"metric\"` or `maximize = \"metric\"`");
        return None;
    };
    // A metric counts once across every objective.
    let mut seen: Vec<&str> = Vec::new();
    for (o, at) in &objectives {
        for (m, _) in &o.terms {
            if seen.contains(&m.as_str()) {
                ctx.err(at.clone(), format!("`{m}` appears in more than one objective: a metric is optimized once"));
            }
            seen.push(m);
        }
    }
    let mut thresholds = Vec::new();
    for (text, at) in string_list(ctx, t, "thresholds") {
        if objectives.len() < 2 {
            ctx.err(
                at,
                "`objective.thresholds` bound a Pareto front: they need two or more objectives (use `constraints.outcomes` to bound a metric)",
            );
            break;
        }
        let (metric, relation, bound) = match expr::outcome_constraint(text) {
            Ok(c) => c,
            Err(e) => {
                ctx.err(at, format!("`objective.thresholds`: \"{text}\": {e}"));
                continue;
            }
        };
        let Some((o, _)) = objectives.iter().find(|(o, _)| o.is_metric() && o.name == metric) else {
            if let Some((sum, _)) = objectives.iter().find(|(o, _)| o.terms.iter().any(|(m, _)| *m == metric)) {
                ctx.err(
                    at,
                    format!(
                        "`objective.thresholds`: \"{text}\" names `{metric}`, which is only a term of the objective `{}`: a threshold bounds an objective that is one metric (bound `{metric}` itself with `constraints.outcomes`)",
                        sum.name
                    ),
                );
                continue;
            }
            let names = objectives.iter().filter(|(o, _)| o.is_metric()).map(|(o, _)| o.name.as_str());
            ctx.err(
                at,
                format!(
                    "`objective.thresholds`: \"{text}\" names `{metric}`, which is not an objective metric{}",
                    did_you_mean(&metric, names)
                ),
            );
            continue;
        };
        let wanted = if o.direction == Direction::Minimize { Relation::AtMost } else { Relation::AtLeast };
        if relation != wanted {
            let op = if wanted == Relation::AtMost { "<=" } else { ">=" };
            ctx.err(
                at,
                format!(
                    "`objective.thresholds`: `{metric}` is {}d, so its threshold reads `{metric} {op} {bound}`",
                    o.verb()
                ),
            );
            continue;
        }
        thresholds.push(OutcomeConstraint { metric, relation, bound });
    }
    // With errors recorded, what did parse still takes part in the checks that follow.
    (!objectives.is_empty())
        .then(|| (Goal { objectives: objectives.into_iter().map(|(o, _)| o).collect(), thresholds }, span))
}

fn string_list<'a>(ctx: &mut Ctx, t: &Table<'a, '_>, key: &str) -> Vec<(&'a str, std::ops::Range<usize>)> {
    let Some(v) = t.get(key) else { return Vec::new() };
    let Some(arr) = as_array(ctx, v, &t.path(key)) else { return Vec::new() };
    arr.iter().filter_map(|item| as_str(ctx, item, &t.path(key)).map(|s| (s, item.span()))).collect()
}

fn read_parameter_constraints(ctx: &mut Ctx, t: &Table, space: &SearchSpace) -> Vec<LinearConstraint> {
    let mut out = Vec::new();
    for (text, span) in string_list(ctx, t, "parameters") {
        match expr::linear_constraint(text) {
            Err(e) => ctx.err(span, format!("`constraints.parameters`: \"{text}\": {e}")),
            Ok((terms, bound)) => {
                let mut ok = true;
                for (name, _) in &terms {
                    match space.parameter(name) {
                        None => {
                            let names = space.parameters.iter().map(|p| p.name.as_str());
                            ctx.err(
                                span.clone(),
                                format!(
                                    "`constraints.parameters`: \"{text}\" names `{name}`, which is not a parameter{}",
                                    did_you_mean(name, names)
                                ),
                            );
                            ok = false;
                        }
                        Some(Parameter { domain: Domain::Float { .. } | Domain::Int { .. }, .. }) => {}
                        Some(_) => {
                            ctx.err(span.clone(), format!("`constraints.parameters`: \"{text}\" names `{name}`; only float and int parameters can appear in a parameter constraint"));
                            ok = false;
                        }
                    }
                }
                if ok {
                    out.push(LinearConstraint { terms, bound, text: text.to_string() });
                }
            }
        }
    }
    if !out.is_empty() {
        let check = SearchSpace { parameters: space.parameters.clone(), constraints: out.clone() };
        if check.constraints_feasible() == Some(false) {
            ctx.err(
                t.key_span("parameters"),
                "`constraints.parameters`: no point of the search space satisfies every parameter constraint",
            );
        }
    }
    out
}

fn read_outcome_constraints(ctx: &mut Ctx, t: &Table) -> Vec<OutcomeConstraint> {
    let mut out = Vec::new();
    for (text, span) in string_list(ctx, t, "outcomes") {
        match expr::outcome_constraint(text) {
            Err(e) => ctx.err(span, format!("`constraints.outcomes`: \"{text}\": {e}")),
            Ok((metric, relation, bound)) => out.push(OutcomeConstraint { metric, relation, bound }),
        }
    }
    out
}

fn read_metric_rule(ctx: &mut Ctx, name: &str, v: &SV, base: &Path) -> Option<MetricRule> {
    let path = format!("metrics.{name}");
    let t = Table::of(ctx, &path, v)?;
    t.check_keys(ctx, &["regex", "file", "pointer", "plugin"], &[]);
    if let Some(pv) = t.get("plugin") {
        if let Some(k) = ["regex", "file", "pointer"].into_iter().find(|k| t.get(k).is_some()) {
            ctx.err(t.key_span(k), format!("`{path}`: give either `plugin` or `{k}`, not both"));
            return None;
        }
        let pt = Table::of(ctx, &format!("{path}.plugin"), pv)?;
        pt.check_keys(ctx, &["library", "name", "config"], &[]);
        return read_plugin_ref(ctx, &pt, &format!("{path}.plugin"), base).map(MetricRule::Plugin);
    }
    match (t.str(ctx, "regex"), t.str(ctx, "file"), t.str(ctx, "pointer")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            ctx.err(t.key_span("regex"), format!("`{path}`: give either `regex` or `file` + `pointer`, not both"));
            None
        }
        (Some(re), None, None) => match regex::Regex::new(re) {
            Ok(r) if r.captures_len() >= 2 => Some(MetricRule::Regex(r)),
            Ok(_) => {
                ctx.err(
                    t.get("regex")?.span(),
                    format!("`{path}.regex` needs a capture group around the value, like 'loss: ([-0-9.eE+]+)'"),
                );
                None
            }
            Err(e) => {
                let msg = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
                ctx.err(t.get("regex")?.span(), format!("`{path}.regex` is not a valid regular expression: {msg}"));
                None
            }
        },
        (None, Some(file), pointer) => {
            let pointer = pointer.unwrap_or("");
            if !pointer.is_empty() && !pointer.starts_with('/') {
                ctx.err(
                    t.get("pointer")?.span(),
                    format!("`{path}.pointer` is a JSON pointer and starts with `/`, like \"/metrics/loss\""),
                );
                return None;
            }
            Some(MetricRule::File { path: file.to_string(), pointer: pointer.to_string() })
        }
        (None, None, Some(_)) => {
            ctx.err(t.key_span("pointer"), format!("`{path}.pointer` needs `file`: the file the trial writes"));
            None
        }
        (None, None, None) => Some(MetricRule::Default),
    }
}

const EXTERNAL_KEYS: [&str; 6] = ["submit", "status", "status_all", "status_map", "cancel", "job_id_regex"];
const SLURM_KEYS: [&str; 2] = ["script", "sbatch_args"];
const PLUGIN_KEYS: [&str; 4] = ["library", "name", "config", "call_timeout"];
const COMMAND_KEYS: [&str; 9] =
    ["kind", "command", "shell", "env", "workdir", "timeout", "stop_grace", "keep_trial_dirs", "progression"];

fn read_runner(ctx: &mut Ctx, t: &Table, space: &SearchSpace, base: &Path) -> Option<RunnerSpec> {
    let kind_v = t.get("kind");
    let kind_s = match kind_v {
        Some(v) => as_str(ctx, v, "runner.kind")?,
        None => "command",
    };
    match kind_s {
        "command" => {}
        "plugin" => return read_plugin_runner(ctx, t, base),
        "external" | "slurm" => return jobs::read_external_runner(ctx, t, space, base, kind_s),
        other => {
            ctx.err(
                kind_v?.span(),
                format!(
                    "`runner.kind` must be \"command\", \"external\", \"slurm\" or \"plugin\", not \"{other}\"{}",
                    did_you_mean(other, ["command", "external", "slurm", "plugin"])
                ),
            );
            return None;
        }
    }
    check_runner_keys(ctx, t, "command");

    let names: Vec<&str> = space.parameters.iter().map(|p| p.name.as_str()).collect();
    let placeholders: Vec<&str> = names.iter().copied().chain(RESERVED_PLACEHOLDERS).collect();
    let tmpl = |ctx: &mut Ctx, s: &str, span: std::ops::Range<usize>, what: &str| {
        template_with(ctx, s, span, what, &placeholders)
    };
    let shell = t.bool(ctx, "shell").unwrap_or(false);
    let command_v = t.require(ctx, "command")?;
    let argv = read_argv(ctx, command_v, "runner.command", shell, &placeholders);
    let mut shell_quoting = Vec::new();
    if let (true, Some([t])) = (shell, argv.as_deref()) {
        match crate::domain::shell_quoting(t) {
            Ok(q) => shell_quoting = q,
            Err(e) => {
                ctx.err(command_v.span(), format!("`runner.command` (run by `sh -c`): {e}"));
                return None;
            }
        }
    }
    let mut env = Vec::new();
    if let Some(ev) = t.get("env") {
        if let Some(et) = Table::of(ctx, "runner.env", ev) {
            for (k, _, v) in &et.entries {
                let text = match v.get_ref() {
                    DeValue::String(s) => s.to_string(),
                    DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => scalar(v.get_ref())?.to_string(),
                    other => {
                        ctx.err(v.span(), format!("`runner.env.{k}` must be a string, not {}", kind(other)));
                        continue;
                    }
                };
                if let Some(tp) = tmpl(ctx, &text, v.span(), &format!("runner.env.{k}")) {
                    env.push((k.to_string(), tp));
                }
            }
        }
    }
    let workdir = match t.get("workdir") {
        Some(v) => match as_str(ctx, v, "runner.workdir") {
            Some(s) => Some(tmpl(ctx, s, v.span(), "runner.workdir")),
            None => Some(None),
        },
        None => None,
    };
    let workdir = match workdir {
        Some(None) => return None,
        Some(Some(t)) => Some(t),
        None => None,
    };
    let timeout = t.get("timeout").and_then(|v| as_positive_duration(ctx, v, "runner.timeout"));
    let stop_grace =
        t.get("stop_grace").and_then(|v| as_duration(ctx, v, "runner.stop_grace")).unwrap_or(Duration::from_secs(10));
    let keep_trial_dirs = match t.one_of(ctx, "keep_trial_dirs", &["all", "failed", "none"]) {
        Some("failed") => KeepTrialDirs::Failed,
        Some("none") => KeepTrialDirs::None,
        _ => KeepTrialDirs::All,
    };
    let progression = t.str(ctx, "progression").unwrap_or("step").to_string();
    let (line, col) = ctx.line_col(command_v.span().start);
    let origin = format!("{}:{line}:{col}: `runner.command`", ctx.file);
    Some(RunnerSpec::Command(CommandSpec {
        argv: argv?,
        shell,
        shell_quoting,
        env,
        workdir,
        timeout,
        stop_grace,
        keep_trial_dirs,
        progression,
        origin,
    }))
}

/// A template whose placeholders must be among `placeholders`.
fn template_with(
    ctx: &mut Ctx,
    s: &str,
    span: std::ops::Range<usize>,
    what: &str,
    placeholders: &[&str],
) -> Option<Template> {
    match expr::template(s) {
        Err(e) => {
            ctx.err(span, format!("`{what}`: {e}"));
            None
        }
        Ok(t) => {
            let mut ok = true;
            for seg in &t.segments {
                if let Segment::Placeholder(p) = seg {
                    if !placeholders.contains(&p.as_str()) {
                        ctx.err(
                            span.clone(),
                            format!(
                                "`{what}`: unknown placeholder `{{{p}}}`{}",
                                did_you_mean(p, placeholders.iter().copied())
                                    .replace("`?", "}`?")
                                    .replace("mean `", "mean `{")
                            ),
                        );
                        ok = false;
                    }
                }
            }
            ok.then_some(t)
        }
    }
}

/// A command: an argv array, or a string split like a shell would (then each word is a
/// template); with `shell`, one template for `sh -c`.
fn read_argv(ctx: &mut Ctx, command_v: &SV, what: &str, shell: bool, placeholders: &[&str]) -> Option<Vec<Template>> {
    let tmpl = |ctx: &mut Ctx, s: &str, span: std::ops::Range<usize>, what: &str| {
        template_with(ctx, s, span, what, placeholders)
    };
    let mut argv = Vec::new();
    match command_v.get_ref() {
        DeValue::String(s) if shell => argv.push(tmpl(ctx, s, command_v.span(), what)),
        DeValue::String(s) => match shlex::split(s) {
            Some(words) if !words.is_empty() => {
                let operator = words.iter().skip(1).find(|w| {
                    matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&" | ">" | ">>" | "<" | "2>" | "2>&1")
                        || w.starts_with(['>', '<', '|'])
                        || w.ends_with(';')
                });
                if let Some(op) = operator {
                    ctx.warn(
                        command_v.span(),
                        format!("`{what}` holds `{op}`, but it does not run through a shell: `{op}` reaches the program as an argument; set `shell = true` for pipes, redirections and `;`"),
                    );
                }
                for w in words {
                    argv.push(tmpl(ctx, &w, command_v.span(), what));
                }
            }
            _ => {
                ctx.err(command_v.span(), format!("`{what}` cannot be split into words (an unclosed quote?)"));
                return None;
            }
        },
        DeValue::Array(items) => {
            let mut words = Vec::new();
            for item in items {
                words.push((as_str(ctx, item, what)?, item.span()));
            }
            if words.is_empty() {
                ctx.err(command_v.span(), format!("`{what}` is empty"));
                return None;
            }
            if shell {
                let joined = words.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(" ");
                argv.push(tmpl(ctx, &joined, command_v.span(), what));
            } else {
                for (w, span) in words {
                    argv.push(tmpl(ctx, w, span, what));
                }
            }
        }
        other => {
            ctx.err(command_v.span(), format!("`{what}` must be an array of strings or a string, not {}", kind(other)));
            return None;
        }
    }
    argv.into_iter().collect()
}

/// Keys of a `[runner]` of kind `kind`: a key of another kind is misplaced, any other
/// unknown key gets a suggestion.
fn check_runner_keys(ctx: &mut Ctx, t: &Table, kind: &str) {
    misplaced_runner_keys(ctx, t, kind);
    let known: Vec<&str> = COMMAND_KEYS
        .iter()
        .chain(EXTERNAL_KEYS.iter())
        .chain(SLURM_KEYS.iter())
        .chain(PLUGIN_KEYS.iter())
        .copied()
        .collect();
    t.check_keys(ctx, &known, &[]);
}

/// Keys of the other kinds found in a `[runner]` of kind `kind`: each is misplaced.
fn misplaced_runner_keys(ctx: &mut Ctx, t: &Table, kind: &str) {
    let own: Vec<&str> = match kind {
        "command" => COMMAND_KEYS[1..].to_vec(),
        "external" => EXTERNAL_KEYS.iter().chain(jobs::SHARED_KEYS.iter()).copied().collect(),
        "slurm" => SLURM_KEYS.iter().chain(jobs::SHARED_KEYS.iter()).chain(["command"].iter()).copied().collect(),
        _ => PLUGIN_KEYS.iter().chain(["keep_trial_dirs"].iter()).copied().collect(),
    };
    let groups: [(&str, &[&str]); 4] = [
        ("command", &COMMAND_KEYS[1..]),
        ("external", &EXTERNAL_KEYS),
        ("slurm", &SLURM_KEYS),
        ("plugin", &PLUGIN_KEYS),
    ];
    for (k, span, _) in &t.entries {
        if own.contains(k) || *k == "kind" {
            continue;
        }
        if let Some((g, _)) = groups.iter().find(|(_, keys)| keys.contains(k)) {
            ctx.err(span.clone(), format!("`runner.{k}`: it belongs to `kind = \"{g}\"`, not `kind = \"{kind}\"`"));
        }
    }
}

/// `library` + `name` + optional `config` of a plugin runner or metric.
fn read_plugin_ref(ctx: &mut Ctx, t: &Table, path: &str, base: &Path) -> Option<PluginRef> {
    let library_v = t.require(ctx, "library");
    let library = library_v.and_then(|v| as_str(ctx, v, &format!("{path}.library")));
    let name = t.require(ctx, "name").and_then(|v| as_str(ctx, v, &format!("{path}.name")));
    let config = match t.get("config") {
        None => serde_json::Value::Object(Default::default()),
        Some(v) => match v.get_ref() {
            DeValue::Table(_) => to_json(v.get_ref()),
            other => {
                ctx.err(v.span(), format!("`{path}.config` must be a table, not {}", kind(other)));
                return None;
            }
        },
    };
    let (library, name, library_v) = (library?, name?, library_v?);
    if library.is_empty() {
        ctx.err(library_v.span(), format!("`{path}.library` is empty: give the path of the plugin's .so file"));
        return None;
    }
    let (line, col) = ctx.line_col(library_v.span().start);
    Some(PluginRef {
        library: base.join(library),
        by_name: (!library.contains('/')).then(|| library.to_string()),
        name: name.to_string(),
        config,
        origin: format!("{}:{line}:{col}: `{path}.library`", ctx.file),
    })
}

/// A TOML value as JSON (dates become strings).
fn to_json(v: &DeValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        DeValue::String(s) => J::String(s.to_string()),
        DeValue::Integer(_) => parse_int(v).map_or(J::Null, J::from),
        DeValue::Float(_) => parse_float(v).and_then(serde_json::Number::from_f64).map_or(J::Null, J::Number),
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        DeValue::Array(a) => J::Array(a.iter().map(|x| to_json(x.get_ref())).collect()),
        DeValue::Table(t) => {
            J::Object(t.iter().map(|(k, x)| (k.get_ref().to_string(), to_json(x.get_ref()))).collect())
        }
    }
}

fn read_plugin_runner(ctx: &mut Ctx, t: &Table, base: &Path) -> Option<RunnerSpec> {
    check_runner_keys(ctx, t, "plugin");
    let plugin = read_plugin_ref(ctx, t, "runner", base);
    let call_timeout = t
        .get("call_timeout")
        .and_then(|v| as_positive_duration(ctx, v, "runner.call_timeout"))
        .unwrap_or(Duration::from_secs(30));
    let keep_trial_dirs = match t.one_of(ctx, "keep_trial_dirs", &["all", "failed", "none"]) {
        Some("failed") => KeepTrialDirs::Failed,
        Some("none") => KeepTrialDirs::None,
        _ => KeepTrialDirs::All,
    };
    Some(RunnerSpec::Plugin(PluginSpec { plugin: plugin?, call_timeout, keep_trial_dirs }))
}

const ORCHESTRATION_KEYS: [&str; 14] = [
    "max_trials",
    "parallelism",
    "tolerated_trial_failure_rate",
    "min_failed_trials_for_failure_rate_check",
    "initial_seconds_between_polls",
    "seconds_between_polls_backoff_factor",
    "max_seconds_between_polls",
    "ttl_seconds_for_trials",
    "timeout_hours",
    "retries_per_failed_arm",
    "max_pending_trials",
    "max_cost",
    "run_trials_in_batches",
    "worker_lease_seconds",
];

fn read_orchestration(ctx: &mut Ctx, t: &Table, runner_is_command: bool) -> Option<Orchestration> {
    t.check_keys(ctx, &ORCHESTRATION_KEYS, &[]);
    let d = Orchestration::default();
    let max_trials =
        t.require(ctx, "max_trials").and_then(|_| t.i64_where(ctx, "max_trials", "a positive integer", |x| x >= 1));
    let o = Orchestration {
        max_trials: max_trials.unwrap_or(0) as u64,
        parallelism: {
            let what = if runner_is_command {
                format!("between 1 and {MAX_LOCAL_PARALLELISM} (local processes on one machine)")
            } else {
                format!("between 1 and {MAX_PARALLELISM}")
            };
            t.i64_where(ctx, "parallelism", &what, |x| {
                x >= 1 && Orchestration::check_parallelism(x as u64, runner_is_command).is_ok()
            })
            .map_or(d.parallelism, |x| x as usize)
        },
        tolerated_trial_failure_rate: t
            .f64_where(ctx, "tolerated_trial_failure_rate", "a rate between 0 and 1", |x| (0.0..=1.0).contains(&x))
            .unwrap_or(d.tolerated_trial_failure_rate),
        min_failed_trials_for_failure_rate_check: t
            .i64_where(ctx, "min_failed_trials_for_failure_rate_check", "a non-negative integer", |x| x >= 0)
            .map_or(d.min_failed_trials_for_failure_rate_check, |x| x as u64),
        initial_seconds_between_polls: t
            .f64_where(ctx, "initial_seconds_between_polls", "a number of seconds (0 or more)", |x| {
                x >= 0.0 && x.is_finite()
            })
            .unwrap_or(d.initial_seconds_between_polls),
        seconds_between_polls_backoff_factor: t
            .f64_where(ctx, "seconds_between_polls_backoff_factor", "a factor of 1 or more", |x| {
                x >= 1.0 && x.is_finite()
            })
            .unwrap_or(d.seconds_between_polls_backoff_factor),
        max_seconds_between_polls: t
            .f64_where(ctx, "max_seconds_between_polls", "a number of seconds (0 or more)", |x| {
                x >= 0.0 && x.is_finite()
            })
            .unwrap_or(d.max_seconds_between_polls),
        ttl_seconds_for_trials: t.f64_where(ctx, "ttl_seconds_for_trials", "a positive number of seconds", |x| x > 0.0),
        timeout_hours: t.f64_where(ctx, "timeout_hours", "a positive number of hours", |x| x > 0.0),
        retries_per_failed_arm: t
            .i64_where(ctx, "retries_per_failed_arm", "a non-negative integer", |x| (0..=1000).contains(&x))
            .map_or(0, |x| x as u32),
        max_pending_trials: t
            .i64_where(ctx, "max_pending_trials", &format!("between 1 and {MAX_PARALLELISM}"), |x| {
                (1..=MAX_PARALLELISM as i64).contains(&x)
            })
            .map(|x| x as usize),
        max_cost: t.f64_where(ctx, "max_cost", "a positive number", |x| x > 0.0),
        run_trials_in_batches: t.bool(ctx, "run_trials_in_batches").unwrap_or(false),
        worker_lease_seconds: t
            .f64_where(ctx, "worker_lease_seconds", "a number of seconds of at least 1", |x| x >= 1.0 && x.is_finite())
            .unwrap_or(d.worker_lease_seconds),
        max_trials_per_worker: None,
        detach: false,
        ignore_global_stopping: false,
    };
    if o.run_trials_in_batches && runner_is_command {
        ctx.err(
            t.key_span("run_trials_in_batches"),
            "`orchestration.run_trials_in_batches` needs a runner that deploys in batches (`kind = \"plugin\"`); the command runner starts one process per trial",
        );
    }
    max_trials?;
    Some(o)
}

fn read_generation(ctx: &mut Ctx, t: Option<&Table>, space: &SearchSpace) -> Option<GenerationSpec> {
    let mut g = GenerationSpec {
        method: GenerationMethod::Auto,
        initial_trials: None,
        initial_points: Vec::new(),
        grid_resolution: 5,
    };
    let Some(t) = t else { return Some(g) };
    t.check_keys(ctx, &["method", "initial_trials", "initial_points", "grid_resolution"], &[]);
    if let Some(v) = t.get("method") {
        let m = as_str(ctx, v, "generation.method")?;
        g.method = match m {
            "auto" => GenerationMethod::Auto,
            "sobol" => GenerationMethod::Sobol,
            "random" => GenerationMethod::Random,
            "grid" => GenerationMethod::Grid,
            "bayesian" => GenerationMethod::Bayesian,
            other => {
                let opts = ["auto", "bayesian", "sobol", "random", "grid"];
                ctx.err(v.span(), format!("`generation.method` must be one of \"auto\", \"bayesian\", \"sobol\", \"random\", \"grid\", not \"{other}\"{}", did_you_mean(other, opts)));
                return None;
            }
        };
    }
    g.initial_trials = t.i64_where(ctx, "initial_trials", "a positive integer", |x| x >= 1).map(|x| x as u64);
    g.grid_resolution = t
        .i64_where(ctx, "grid_resolution", "an integer of 2 or more", |x| (2..=10_000).contains(&x))
        .map_or(5, |x| x as usize);
    if let Some(v) = t.get("initial_points") {
        let arr = as_array(ctx, v, "generation.initial_points")?;
        for item in arr {
            let Some(pt) = Table::of(ctx, "generation.initial_points", item) else { continue };
            let mut arm = space.center();
            let mut ok = true;
            for (k, span, val) in &pt.entries {
                let Some(p) = space.parameter(k) else {
                    let names = space.parameters.iter().map(|p| p.name.as_str());
                    ctx.err(
                        span.clone(),
                        format!("`generation.initial_points`: `{k}` is not a parameter{}", did_you_mean(k, names)),
                    );
                    ok = false;
                    continue;
                };
                let coerced =
                    scalar(val.get_ref()).ok_or_else(|| "not a scalar".to_string()).and_then(|x| p.coerce(&x));
                match coerced {
                    Ok(x) => {
                        if let Some(slot) = arm.values.iter_mut().find(|(n, _)| n == *k) {
                            slot.1 = x;
                        }
                    }
                    Err(e) => {
                        ctx.err(val.span(), format!("`generation.initial_points`: `{k}`: {e}"));
                        ok = false;
                    }
                }
            }
            if ok && !space.constraints.is_empty() && !space.satisfies_constraints(&arm) {
                ctx.err(item.span(), "`generation.initial_points`: this point violates a parameter constraint");
                ok = false;
            }
            if ok {
                g.initial_points.push(arm);
            }
        }
    }
    Some(g)
}

fn read_storage(ctx: &mut Ctx, t: Option<&Table>, base: &Path, name: &str) -> (StoreLocation, Durability) {
    let default = StoreLocation::File(base.join(".optx").join(format!("{name}.db")));
    let Some(t) = t else { return (default, Durability::Normal) };
    t.check_keys(ctx, &["path", "url", "durability"], &[]);
    let path = match t.str(ctx, "path") {
        Some(p) if p.is_empty() || base.join(p).is_dir() => {
            ctx.err(
                t.get("path").map(|v| v.span()).unwrap_or(t.span.clone()),
                format!("`storage.path` = \"{p}\" names a directory: give the path of the store's file, such as \"{name}.db\""),
            );
            None
        }
        Some(p) => Some(StoreLocation::File(base.join(p))),
        None => None,
    };
    let url = match t.str(ctx, "url") {
        Some(u) if crate::domain::is_server_url(u) => Some(StoreLocation::parse(u, base).for_experiment(name)),
        Some(u) => {
            let shown = crate::domain::redact_url(u);
            ctx.err(
                t.get("url").map(|v| v.span()).unwrap_or(t.span.clone()),
                format!("`storage.url` = \"{shown}\" is not a server database: give a URL such as \"postgresql://user@host:5432/database\" (a file store is `path`)"),
            );
            None
        }
        None => None,
    };
    if path.is_some() && url.is_some() {
        ctx.err(
            t.get("url").map(|v| v.span()).unwrap_or(t.span.clone()),
            "`storage.path` and `storage.url` both name a store: keep one".to_string(),
        );
    }
    let durability = match t.one_of(ctx, "durability", &["normal", "fsync"]) {
        Some("fsync") => Durability::Fsync,
        _ => Durability::Normal,
    };
    (url.or(path).unwrap_or(default), durability)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[experiment]
name = "t"
[parameters]
x = { type = "float", bounds = [0.0, 1.0] }
n = { type = "int", bounds = [1, 8] }
[objective]
minimize = "f"
[runner]
command = ["python3", "t.py", "{x}", "{n}"]
[orchestration]
max_trials = 3
"#;

    fn errors(src: &str) -> Vec<String> {
        match parse(src, "e.toml", Path::new("/tmp")) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_server_store_is_named_by_a_url_and_its_password_stays_out_of_errors() {
        let s = parse(&format!("{GOOD}[storage]\nurl = \"postgresql://ann:pw@db/lab\"\n"), "e.toml", Path::new("/tmp"))
            .unwrap();
        assert_eq!(
            s.store,
            StoreLocation::Server { url: "postgresql://ann:pw@db/lab".into(), experiment: Some("t".into()) }
        );
        assert_eq!(s.trials_root(), Path::new("/tmp/.optx/t.server.trials"));
        let e = errors(&format!("{GOOD}[storage]\nurl = \"mysql://ann:pw@db/lab\"\n"));
        assert!(e[0].contains("e.toml:") && e[0].contains("`storage.url`") && !e[0].contains(":pw@"), "{e:?}");
        let e = errors(&format!("{GOOD}[storage]\nurl = \"postgresql://db/lab\"\npath = \"x.db\"\n"));
        assert!(e[0].contains("both name a store"), "{e:?}");
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let s = parse(GOOD, "e.toml", Path::new("/tmp")).unwrap();
        assert_eq!(s.orchestration.parallelism, 1);
        assert_eq!(s.store, StoreLocation::File("/tmp/.optx/t.db".into()));
        assert_eq!(s.initial_trials(), 5);
        assert!(s.metrics.contains_key("f") && s.metrics.contains_key("cost"));
        // Whatever the dimension: the center and 4 Sobol points, as Ax starts.
        let six: String = (1..=6).map(|i| format!("x{i} = {{ type = \"float\", bounds = [0.0, 1.0] }}\n")).collect();
        let text = GOOD.replacen("[parameters]\n", &format!("[parameters]\n{six}"), 1);
        let s = parse(&text, "e.toml", Path::new("/tmp")).unwrap();
        assert!(s.space.dims() >= 6);
        assert_eq!(s.initial_trials(), 5);
    }

    #[test]
    fn every_error_is_reported_with_its_position() {
        let src = GOOD.replace("max_trials = 3", "max_trials = 0\nparalelism = 2").replace("\"{n}\"", "\"{nn}\"");
        let e = errors(&src);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e
            .iter()
            .any(|m| m.contains("unknown key `paralelism` in `[orchestration]` (did you mean `parallelism`?)")));
        assert!(
            e.iter().any(|m| m.starts_with("e.toml:12:14: `orchestration.max_trials` must be a positive integer")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("unknown placeholder `{nn}` (did you mean `{n}`?)")), "{e:?}");
    }

    #[test]
    fn global_stopping_is_read_with_axs_defaults() {
        let s = parse(&format!("{GOOD}\n[global_stopping]\n"), "e.toml", Path::new("/tmp")).unwrap();
        let g = crate::domain::GlobalStopping::Improvement { min_trials: 5, window_size: 5, improvement_bar: 0.1 };
        assert_eq!(s.global_stopping, Some(g));
        let e = errors(&format!("{GOOD}\n[global_stopping]\nstrategy = \"target\"\n"));
        assert!(e.iter().any(|m| m.contains("value")), "{e:?}");
    }

    #[test]
    fn early_stopping_is_read_with_its_defaults_and_checked() {
        let es = |extra: &str| parse(&format!("{GOOD}\n[early_stopping]\n{extra}"), "e.toml", Path::new("/tmp"));
        let s = es("strategy = \"percentile\"\nmin_progression = 5\n").unwrap();
        let e = s.early_stopping.unwrap();
        assert_eq!(e.metric, "f");
        assert_eq!(e.rule, crate::domain::StopRule::Percentile { threshold: 50.0 });
        assert_eq!((e.options.min_curves, e.options.min_progression, e.options.minimize), (5, Some(5.0), true));
        let s = es("strategy = \"asha\"\nmax_resource = 27\n").unwrap();
        let asha = crate::domain::StopRule::Asha { min_resource: 1.0, max_resource: 27.0, reduction_factor: 3.0 };
        assert_eq!(s.early_stopping.unwrap().rule, asha);
        let e = errors(&format!("{GOOD}\n[early_stopping]\nstrategy = \"threshold\"\n"));
        assert!(e.iter().any(|m| m.contains("metric_threshold")), "{e:?}");
        let e = errors(&format!("{GOOD}\n[early_stopping]\nmetric = \"g\"\n"));
        assert!(e.iter().any(|m| m.contains("must be an objective or a constrained metric")), "{e:?}");
        let e = errors(&format!("{GOOD}\n[early_stopping]\nstrategy = \"median\"\n"));
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn infeasible_constraints_are_a_config_error() {
        let e = errors(&format!("{GOOD}\n[constraints]\nparameters = [\"x + n >= 10\"]\n"));
        assert!(e.iter().any(|m| m.contains("no point of the search space satisfies")), "{e:?}");
    }

    #[test]
    fn changes_to_the_fixed_part_are_listed() {
        let changed = GOOD.replace("[0.0, 1.0]", "[0.0, 2.0]").replace("max_trials = 3", "max_trials = 9");
        let d = fixed_part_changes(GOOD, &changed);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("[parameters] x:"));
    }
}
