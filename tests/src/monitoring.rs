//! The chart's Grafana dashboard and Prometheus alerts, checked against what the programs
//! export. The metric names come from the registrations in `node/src/metrics.rs` and
//! `operator/src/metrics.rs`, held against what the programs' own encoders print (the text a
//! member and the operator serve on `/metrics`), with the suffixes Prometheus stores them under
//! (`_total` on counters, `_bucket`/`_sum`/`_count` on histograms, units); the label names from
//! the programs' label sets (their `EncodeLabelSet` structs) and the labels a scrape adds. A
//! dashboard query or alert expression that names anything else — a misspelt metric, a counter
//! without `_total`, a label or role that does not exist — fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value as Json;
use serde_yaml::Value;

use crate::manifests::{repo_root, str_at};
use crate::promql;

/// Labels the scrape adds to every series: `job` and `instance` (Prometheus), `namespace`,
/// `pod`, `container`, `endpoint` and `service` (the Prometheus Operator's PodMonitor and
/// ServiceMonitor). The PodMonitor's `podTargetLabels` are read from its template.
const SCRAPE_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "service",
];

/// Series Prometheus itself writes for each target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

/// The alerts the chart must have (issue 16): a runbook each in README.md.
pub const REQUIRED_ALERTS: &[&str] = &[
    "KuberaftQuorumLost",
    "KuberaftNoLeader",
    "KuberaftFrequentLeaderChanges",
    "KuberaftMemberLagging",
    "KuberaftSlowFsync",
    "KuberaftMemberUnreachable",
    "KuberaftOperatorReconcileErrors",
];

/// What the programs export.
#[derive(Debug)]
pub struct Exported {
    /// Series names, as Prometheus stores them.
    pub metrics: BTreeSet<String>,
    /// Every label name a series can have: the programs' and the scrape's.
    pub labels: BTreeSet<String>,
    /// The label names the programs set; their values are string literals in the source.
    pub own_labels: BTreeSet<String>,
    /// The text of node/src and operator/src, where those values must appear.
    source: String,
}

impl Exported {
    /// What a member (`node/src/metrics.rs`) and the operator (`operator/src/metrics.rs`)
    /// serve. A family with labels prints nothing until a series of it is set, so the names come
    /// from the registrations in those files; the programs' own encoders must print every family
    /// that has a series from the start under the same name and type, which keeps this reading
    /// of the source honest.
    pub fn of_programs() -> Result<Exported, String> {
        let member = kuberaft_node::metrics::Metrics::new().encode();
        let operator = kuberaft_operator::metrics::Exporter::new(
            &kuberaft_operator::metrics::Metrics::default(),
        )
        .encode()
        .map_err(|e| format!("the operator's metrics do not encode: {e}"))?;
        let mut metrics = BTreeSet::new();
        let mut labels: BTreeSet<String> = SCRAPE_LABELS.iter().map(|s| s.to_string()).collect();
        let mut own_labels = BTreeSet::new();
        for (file, encoded) in [
            ("node/src/metrics.rs", &member),
            ("operator/src/metrics.rs", &operator),
        ] {
            if !encoded.contains("# EOF") {
                return Err(format!("the metrics of {file} did not encode: {encoded:?}"));
            }
            let source = std::fs::read_to_string(repo_root().join(file))
                .map_err(|e| format!("cannot read {file}: {e}"))?;
            let registered = registrations(&source).map_err(|e| format!("{file}: {e}"))?;
            let printed = exposition_names(encoded, &mut metrics, &mut labels)?;
            for (name, kind) in &printed {
                if registered.get(name) != Some(kind) {
                    return Err(format!(
                        "the encoder prints {name} ({kind}), the registrations read from {file} \
                         give {:?}: teach kuberaft_tests::monitoring::registrations the new style",
                        registered.get(name)
                    ));
                }
            }
            for (name, kind) in &registered {
                metrics.extend(series_names(name, kind)?);
                if kind == "histogram" {
                    labels.insert("le".to_string());
                }
            }
            own_labels.extend(label_set_fields(&source));
        }
        labels.extend(pod_target_labels()?);
        if own_labels.is_empty() {
            return Err("no EncodeLabelSet struct found in the programs' metrics.rs".to_string());
        }
        labels.extend(own_labels.iter().cloned());
        let mut source = String::new();
        for dir in ["node/src", "operator/src"] {
            rust_sources(&repo_root().join(dir), &mut source);
        }
        Ok(Exported {
            metrics,
            labels,
            own_labels,
            source,
        })
    }

    /// Every problem with `expr`: names that are not exported, labels no series has, values of
    /// the programs' labels they never set (a value counts as set when it is a string literal
    /// somewhere in their source: `"leader"`, `"sent"`). Empty when the expression is fine.
    pub fn problems(&self, expr: &str) -> Vec<String> {
        let names = match promql::scan(expr) {
            Ok(n) => n,
            Err(e) => return vec![e],
        };
        let mut out = Vec::new();
        if names.metrics.is_empty() {
            out.push("names no metric".to_string());
        }
        for m in &names.metrics {
            if !self.metrics.contains(m) && !PROMETHEUS_SERIES.contains(&m.as_str()) {
                out.push(format!("metric {m} is exported by neither program"));
            }
        }
        let matcher_labels = names.matchers.iter().map(|(l, _, _)| l);
        for l in names.grouping.iter().chain(matcher_labels) {
            if !self.labels.contains(l) && l != "__name__" {
                out.push(format!("no series has a label {l}"));
            }
        }
        for (label, op, value) in &names.matchers {
            if !self.own_labels.contains(label) || value.contains('$') {
                continue;
            }
            // A regex of plain alternatives (`leader|candidate`) is checked alternative by
            // alternative; any other regex is left alone.
            let plain = |s: &str| {
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_|".contains(c))
            };
            let values: Vec<&str> = if op.ends_with('~') {
                if !plain(value) {
                    continue;
                }
                value.split('|').collect()
            } else {
                vec![value.as_str()]
            };
            for v in values {
                if !self.source.contains(&format!("\"{v}\"")) {
                    out.push(format!("the programs never set {label}=\"{v}\""));
                }
            }
        }
        out
    }

    fn check(&self, what: &str, expr: &str) -> Result<(), String> {
        let problems = self.problems(expr);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: {}\n  in: {expr}", problems.join("; ")))
        }
    }
}

/// The series Prometheus stores for a family of a type.
fn series_names(family: &str, kind: &str) -> Result<Vec<String>, String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total"],
        "gauge" | "unknown" | "stateset" => &[""],
        "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
        "summary" => &["", "_sum", "_count"],
        "info" => &["_info"],
        other => return Err(format!("unknown metric type {other} of {family}")),
    };
    Ok(suffixes.iter().map(|s| format!("{family}{s}")).collect())
}

/// The families (`# TYPE` lines: name → type) of an exposition; the series and label names of
/// its samples go into `metrics` and `labels`.
fn exposition_names(
    text: &str,
    metrics: &mut BTreeSet<String>,
    labels: &mut BTreeSet<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad TYPE line {line:?}"))?;
            families.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            metrics.insert(line[..end].to_string());
            if line[end..].starts_with('{') {
                let close = line
                    .rfind('}')
                    .ok_or_else(|| format!("unterminated labels in {line:?}"))?;
                let names = promql::scan(&line[..=close])?;
                labels.extend(names.matchers.into_iter().map(|(l, _, _)| l));
            }
        }
    }
    Ok(families)
}

/// The arguments of the call whose `(` is at `open`, split at top-level commas, trimmed.
fn call_args(c: &[char], open: usize) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = open + 1;
    while i < c.len() {
        let ch = c[i];
        if in_string {
            current.push(ch);
            if ch == '\\' {
                if let Some(&next) = c.get(i + 1) {
                    current.push(next);
                }
                i += 1;
            } else if ch == '"' {
                in_string = false;
            }
        } else {
            match ch {
                '"' => {
                    in_string = true;
                    current.push(ch);
                }
                '(' | '[' | '{' => {
                    depth += 1;
                    current.push(ch);
                }
                ')' | ']' | '}' if depth > 0 => {
                    depth -= 1;
                    current.push(ch);
                }
                ')' => {
                    args.push(current.trim().to_string());
                    return Ok(args.into_iter().filter(|a| !a.is_empty()).collect());
                }
                ',' if depth == 0 => args.push(std::mem::take(&mut current).trim().to_string()),
                _ => current.push(ch),
            }
        }
        i += 1;
    }
    Err(format!("unterminated call at character {open}"))
}

/// The families a metrics.rs registers (name with prefix and unit → type), read from its
/// registry's prefix, its
/// `.register("name", help, self.field.clone())` and
/// `.register_with_unit("name", help, Unit::X, m.field.clone())` calls, and the types of the
/// `pub field: …` declarations.
fn registrations(source: &str) -> Result<BTreeMap<String, String>, String> {
    // Registry::with_prefix("…") or registry.sub_registry_with_prefix("…").
    let prefix = source
        .split_once("with_prefix(\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(prefix, _)| prefix)
        .ok_or("no registry prefix")?;
    let c: Vec<char> = source.chars().collect();
    let mut out = BTreeMap::new();
    for (byte_at, call) in source.match_indices(".register") {
        let rest = &source[byte_at + call.len()..];
        let with_unit = rest.starts_with("_with_unit(");
        if !with_unit && !rest.starts_with('(') {
            continue;
        }
        let open_byte = byte_at + call.len() + rest.find('(').unwrap_or(0);
        // call_args counts characters; the source has non-ASCII ones (µs, §).
        let open = source[..open_byte].chars().count();
        let args = call_args(&c, open)?;
        // `metrics.register(&mut registry)` and the like: not a metric.
        let Some(name) = args
            .first()
            .and_then(|a| a.strip_prefix('"'))
            .and_then(|a| a.strip_suffix('"'))
        else {
            continue;
        };
        let expected = if with_unit { 4 } else { 3 };
        if args.len() != expected {
            return Err(format!(
                "register {name}: {} arguments, expected {expected}",
                args.len()
            ));
        }
        let mut family = format!("{prefix}_{name}");
        if with_unit {
            let unit = args[2]
                .strip_prefix("Unit::")
                .ok_or_else(|| format!("register {name}: unit {} is not Unit::X", args[2]))?;
            family = format!("{family}_{}", unit.to_lowercase());
        }
        let value = &args[expected - 1];
        let field = value
            .split('.')
            .nth(1)
            .filter(|_| value.ends_with(".clone()"))
            .ok_or_else(|| format!("register {name}: cannot read the field of {value}"))?;
        // The metric's field (a label struct may have a field of the same name).
        let kinds = ["Histogram", "Counter", "Gauge"];
        let kind = source
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("pub {field}:")))
            .find_map(|declared| kinds.into_iter().find(|k| declared.contains(k)))
            .ok_or_else(|| format!("register {name}: no `pub {field}: <metric type>` field"))?;
        out.insert(family, kind.to_lowercase());
    }
    if out.is_empty() {
        return Err("no registrations found".to_string());
    }
    Ok(out)
}

/// Field names of the `EncodeLabelSet` structs in a metrics.rs: the label names.
fn label_set_fields(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in source.split("EncodeLabelSet)]").skip(1) {
        let Some(body) = part.split_once('{').map(|(_, b)| b) else {
            continue;
        };
        let body = body.split('}').next().unwrap_or("");
        for line in body.lines().map(str::trim) {
            if line.starts_with("//") || line.starts_with("#[") {
                continue;
            }
            if let Some((field, _)) = line.split_once(':') {
                let field = field.trim().trim_start_matches("pub ").trim();
                if !field.is_empty() {
                    out.insert(field.to_string());
                }
            }
        }
    }
    out
}

/// The labels the chart's PodMonitor copies from member pods, as Prometheus names them
/// (`app.kubernetes.io/instance` → `app_kubernetes_io_instance`).
fn pod_target_labels() -> Result<BTreeSet<String>, String> {
    let path = repo_root()
        .join("charts")
        .join("kuberaft-operator")
        .join("templates")
        .join("podmonitor.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeSet::new();
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim().starts_with("podTargetLabels:"));
    lines.next();
    for line in lines.map(str::trim) {
        let Some(label) = line.strip_prefix("- ") else {
            break;
        };
        out.insert(
            label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect(),
        );
    }
    if out.is_empty() {
        return Err("the PodMonitor template has no podTargetLabels".to_string());
    }
    Ok(out)
}

fn rust_sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

/// The anchors GitHub gives README.md's headings (outside code blocks): lower case, spaces to
/// hyphens, punctuation other than `-` and `_` dropped.
pub fn readme_anchors() -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(repo_root().join("README.md"))
        .map_err(|e| format!("cannot read README.md: {e}"))?;
    Ok(headings(&text)
        .into_iter()
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect())
}

/// The runbook headings of README.md: `#### Kuberaft…`.
pub fn readme_runbooks() -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(repo_root().join("README.md"))
        .map_err(|e| format!("cannot read README.md: {e}"))?;
    Ok(headings(&text)
        .into_iter()
        .filter(|h| h.starts_with("Kuberaft") && !h.contains(' '))
        .collect())
}

fn headings(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(line.trim_start_matches('#').trim().to_string());
        }
    }
    out
}

/// Every string under `key` anywhere in `v`.
fn strings_under<'a>(v: &'a Json, key: &str, out: &mut Vec<&'a str>) {
    match v {
        Json::Object(map) => {
            for (k, child) in map {
                match child {
                    Json::String(s) if k == key => out.push(s),
                    _ => strings_under(child, key, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| strings_under(i, key, out)),
        _ => {}
    }
}

/// Every object with a `datasource` object anywhere in `v`: its uid.
fn datasource_uids<'a>(v: &'a Json, out: &mut Vec<&'a str>) {
    match v {
        Json::Object(map) => {
            if let Some(ds) = map.get("datasource").and_then(Json::as_object) {
                out.push(ds.get("uid").and_then(Json::as_str).unwrap_or(""));
            }
            map.values().for_each(|c| datasource_uids(c, out));
        }
        Json::Array(items) => items.iter().for_each(|i| datasource_uids(i, out)),
        _ => {}
    }
}

/// The dashboard JSON: it parses; it picks its Prometheus through a `datasource` variable that
/// every query uses; every panel but a row has a query; every query (panels, annotations,
/// variables) names only exported metrics and labels and only defined variables.
pub fn check_dashboard(text: &str, exported: &Exported) -> Result<String, String> {
    let d: Json =
        serde_json::from_str(text).map_err(|e| format!("the dashboard is not JSON: {e}"))?;
    for key in ["title", "uid"] {
        if d.get(key).and_then(Json::as_str).is_none_or(str::is_empty) {
            return Err(format!("the dashboard has no {key}"));
        }
    }
    let vars = d
        .pointer("/templating/list")
        .and_then(Json::as_array)
        .ok_or("the dashboard has no templating.list")?;
    let var_names: BTreeSet<&str> = vars
        .iter()
        .filter_map(|v| v.get("name").and_then(Json::as_str))
        .collect();
    let ds_var = vars.iter().find(|v| {
        v.get("type").and_then(Json::as_str) == Some("datasource")
            && v.get("query").and_then(Json::as_str) == Some("prometheus")
    });
    let ds_name = ds_var
        .and_then(|v| v.get("name").and_then(Json::as_str))
        .ok_or("no variable of type datasource for prometheus")?;
    let mut uids = Vec::new();
    datasource_uids(&d, &mut uids);
    let wanted = [format!("${{{ds_name}}}"), format!("${ds_name}")];
    if let Some(bad) = uids.iter().find(|u| !wanted.iter().any(|w| w == *u)) {
        return Err(format!(
            "a datasource uid is {bad:?}, not the variable ${{{ds_name}}}"
        ));
    }

    let panels = d
        .get("panels")
        .and_then(Json::as_array)
        .filter(|p| !p.is_empty())
        .ok_or("the dashboard has no panels")?;
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p.get("title").and_then(Json::as_str).unwrap_or("?");
        if let Some(id) = p.get("id").and_then(Json::as_u64)
            && !ids.insert(id)
        {
            return Err(format!("panel id {id} is used twice ({title})"));
        }
        if p.get("type").and_then(Json::as_str) == Some("row") {
            continue;
        }
        let mut exprs = Vec::new();
        strings_under(p, "expr", &mut exprs);
        if exprs.iter().all(|e| e.trim().is_empty()) {
            return Err(format!("panel {title:?} has no query"));
        }
    }

    let mut exprs = Vec::new();
    strings_under(&d, "expr", &mut exprs);
    for expr in &exprs {
        exported.check("a dashboard query", expr)?;
        check_variables(expr, &var_names)?;
    }
    for v in vars
        .iter()
        .filter(|v| v.get("type").and_then(Json::as_str) == Some("query"))
    {
        let query = v
            .get("query")
            .and_then(|q| q.as_str().or_else(|| q.get("query").and_then(Json::as_str)))
            .ok_or("a query variable without a query")?;
        check_label_values(query, exported)?;
        check_variables(query, &var_names)?;
    }
    Ok(format!(
        "({} panels, {} queries, {} variables)",
        panels.len(),
        exprs.len(),
        vars.len()
    ))
}

/// Grafana's `label_values(<selector>, <label>)`: the selector's metrics and the label.
fn check_label_values(query: &str, exported: &Exported) -> Result<(), String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("a variable query is not label_values(…): {query}"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .ok_or_else(|| format!("label_values without a label: {query}"))?;
    exported.check("a variable's query", selector)?;
    let label = label.trim();
    if !exported.labels.contains(label) {
        return Err(format!(
            "a variable lists label {label}, which no series has"
        ));
    }
    Ok(())
}

fn check_variables(text: &str, defined: &BTreeSet<&str>) -> Result<(), String> {
    for v in promql::variables(text) {
        if !v.starts_with("__") && !defined.contains(v.as_str()) {
            return Err(format!("${v} is not a dashboard variable: {text}"));
        }
    }
    Ok(())
}

/// A `for` duration of a rule: digits and a unit.
fn is_duration(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w" | "y")
}

/// A rendered PrometheusRule: every rule's expression reads only exported metrics and no
/// Grafana variable; every alert has a severity, a summary, a description and a runbook_url
/// whose anchor is the alert's own heading in README.md; the required alerts are all there.
/// Returns the alert names.
pub fn check_prometheus_rule(
    rule: &Value,
    exported: &Exported,
    anchors: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    if str_at(rule, &["apiVersion"]) != Some("monitoring.coreos.com/v1") {
        return Err("the PrometheusRule is not monitoring.coreos.com/v1".to_string());
    }
    let groups = rule
        .get("spec")
        .and_then(|s| s.get("groups"))
        .and_then(Value::as_sequence)
        .filter(|g| !g.is_empty())
        .ok_or("the PrometheusRule has no spec.groups")?;
    let mut alerts = BTreeSet::new();
    for group in groups {
        let group_name = str_at(group, &["name"]).ok_or("a rule group without a name")?;
        let rules = group
            .get("rules")
            .and_then(Value::as_sequence)
            .ok_or_else(|| format!("group {group_name} has no rules"))?;
        for r in rules {
            let name = str_at(r, &["alert"])
                .or_else(|| str_at(r, &["record"]))
                .ok_or_else(|| format!("a rule of {group_name} is neither alert nor record"))?;
            let expr = str_at(r, &["expr"]).unwrap_or("");
            if expr.trim().is_empty() {
                return Err(format!("{name} has no expr"));
            }
            exported.check(name, expr)?;
            if let Some(v) = promql::variables(expr).into_iter().next() {
                return Err(format!("{name}'s expr has a variable ${v}: {expr}"));
            }
            if str_at(r, &["alert"]).is_none() {
                continue;
            }
            if let Some(d) = r.get("for")
                && !d.as_str().is_some_and(is_duration)
            {
                return Err(format!("{name}: `for` is {d:?}, not a duration"));
            }
            let severity = str_at(r, &["labels", "severity"]);
            if !matches!(severity, Some("critical" | "warning" | "info")) {
                return Err(format!("{name}: severity {severity:?}"));
            }
            for key in ["summary", "description", "runbook_url"] {
                if str_at(r, &["annotations", key]).is_none_or(|s| s.trim().is_empty()) {
                    return Err(format!("{name} has no {key} annotation"));
                }
            }
            let url = str_at(r, &["annotations", "runbook_url"]).unwrap_or("");
            let (base, anchor) = url
                .split_once('#')
                .ok_or_else(|| format!("{name}'s runbook_url {url} has no #anchor"))?;
            if !base.starts_with("https://") && !base.starts_with("http://") {
                return Err(format!("{name}'s runbook_url {url} is not a URL"));
            }
            if anchor != name.to_lowercase() || !anchors.contains(anchor) {
                return Err(format!(
                    "{name}'s runbook_url ends in #{anchor}; README.md needs a heading `#### {name}`"
                ));
            }
            alerts.insert(name.to_string());
        }
    }
    let missing: Vec<&&str> = REQUIRED_ALERTS
        .iter()
        .filter(|a| !alerts.contains(**a))
        .collect();
    if !missing.is_empty() {
        return Err(format!("alerts missing: {missing:?}"));
    }
    Ok(alerts)
}

/// `v.a.b` of a YAML value.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

/// The dashboard ConfigMap and the PrometheusRule of one `helm template`, against the values
/// file it was rendered with (`values`, over the chart's defaults): each is rendered exactly
/// when its switch is on, and then passes [`check_dashboard`] or [`check_prometheus_rule`]; the
/// ConfigMap holds the chart's dashboards/kuberaft.json as it is, with the sidecar's labels;
/// README.md's runbooks and the rule's alerts match one to one.
pub fn check_rendered(
    objects: &[Value],
    values: &str,
    exported: &Exported,
) -> Result<String, String> {
    let chart = repo_root().join("charts").join("kuberaft-operator");
    let defaults = crate::manifests::file_documents(&chart.join("values.yaml"))?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let over: Value = serde_yaml::from_str(values).unwrap_or(Value::Null);
    let value = |path: &[&str]| at(&over, path).or_else(|| at(&defaults, path)).cloned();
    let on = |path: &[&str]| value(path).and_then(|v| v.as_bool()) == Some(true);
    let dashboards: Vec<&Value> = objects
        .iter()
        .filter(|d| {
            str_at(d, &["kind"]) == Some("ConfigMap") && at(d, &["data", "kuberaft.json"]).is_some()
        })
        .collect();
    let rules: Vec<&Value> = objects
        .iter()
        .filter(|d| str_at(d, &["kind"]) == Some("PrometheusRule"))
        .collect();
    let mut detail = Vec::new();

    match (on(&["grafanaDashboard", "enabled"]), dashboards.as_slice()) {
        (false, []) => {}
        (true, [cm]) => {
            let text = str_at(cm, &["data", "kuberaft.json"]).unwrap_or("");
            let file = std::fs::read_to_string(chart.join("dashboards").join("kuberaft.json"))
                .map_err(|e| format!("dashboards/kuberaft.json: {e}"))?;
            if text.trim_end() != file.trim_end() {
                return Err("the ConfigMap's kuberaft.json is not dashboards/kuberaft.json".into());
            }
            // Helm merges maps, so the default labels stay unless a values file unsets them.
            for source in [&defaults, &over] {
                let Some(labels) =
                    at(source, &["grafanaDashboard", "labels"]).and_then(Value::as_mapping)
                else {
                    continue;
                };
                for (k, v) in labels {
                    let k = k.as_str().unwrap_or("");
                    if at(cm, &["metadata", "labels", k]) != Some(v) {
                        return Err(format!("the dashboard ConfigMap lacks label {k}: {v:?}"));
                    }
                }
            }
            detail.push(format!("dashboard {}", check_dashboard(text, exported)?));
        }
        (on, found) => {
            return Err(format!(
                "grafanaDashboard.enabled={on} renders {} dashboard ConfigMaps",
                found.len()
            ));
        }
    }

    match (on(&["prometheusRule", "enabled"]), rules.as_slice()) {
        (false, []) => {}
        (true, [rule]) => {
            let alerts = check_prometheus_rule(rule, exported, &readme_anchors()?)?;
            // KuberaftOperatorDown fires when the operator's job is absent, so it is made only
            // when something scrapes the operator.
            let operator_job = value(&["prometheusRule", "operatorJob"]);
            let operator_scraped = on(&["metrics", "serviceMonitor", "enabled"])
                || operator_job
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(|j| !j.is_empty());
            if alerts.contains("KuberaftOperatorDown") != operator_scraped {
                return Err(format!(
                    "KuberaftOperatorDown rendered: {}, operator scraped: {operator_scraped}",
                    !operator_scraped
                ));
            }
            let runbooks = readme_runbooks()?;
            let unalerted: Vec<&String> = runbooks
                .iter()
                .filter(|r| {
                    !alerts.contains(*r) && (operator_scraped || *r != "KuberaftOperatorDown")
                })
                .collect();
            if !unalerted.is_empty() {
                return Err(format!(
                    "README.md has runbooks for no alert: {unalerted:?}"
                ));
            }
            detail.push(format!("{} alerts", alerts.len()));
        }
        (on, found) => {
            return Err(format!(
                "prometheusRule.enabled={on} renders {} PrometheusRules",
                found.len()
            ));
        }
    }
    if detail.is_empty() {
        Ok("(both off: neither rendered)".to_string())
    } else {
        Ok(format!("({})", detail.join("; ")))
    }
}
