//! The results JSON (`PREFIX.json`): the meta, the summary cells, the ratios and every run
//! with what was derived from it.

use serde_json::{Value, json};

use crate::Res;
use crate::model::Run;
use crate::ratio::Ratio;
use crate::stats::Cells;

/// The text of the results JSON.
pub(crate) fn results(meta: &Value, runs: &[Run], cells: &Cells, ratios: &[Ratio]) -> Res<String> {
    let summary: Vec<Value> = cells
        .iter()
        .map(|((s, i), c)| {
            json!({
                "scenario": s, "impl": i, "runs": c.runs, "ok": c.ok, "measured": c.measured,
                "median": c.median, "problems": c.problems,
            })
        })
        .collect();
    let ratio_json: Vec<Value> = ratios
        .iter()
        .map(|r| {
            json!({
                "scenario": r.scenario, "metric": r.metric, "subject": r.subject,
                "versus": r.versus, "ratio": r.value,
            })
        })
        .collect();
    // The raw CPU samples stay in the work directory; the results keep what was derived
    // from them.
    let run_json: Vec<Value> = runs
        .iter()
        .map(|r| {
            let mut v = r.raw.clone();
            if let Some(o) = v.as_object_mut() {
                let n = o.remove("samples").and_then(|s| s.as_array().map(Vec::len));
                o.insert("cpu_samples".into(), json!(n));
                if let Some(t) = o.get("server_log_tail").and_then(Value::as_str) {
                    let t = strip_ansi(t);
                    o.insert("server_log_tail".into(), json!(t));
                }
                o.insert("status".into(), json!(r.status));
                o.insert("derived".into(), json!(r.metrics));
            }
            v
        })
        .collect();
    // Pretty at the top, one line per summary cell, ratio and run: small and diffable.
    let lines = |items: &[Value]| -> Res<String> {
        let l: Result<Vec<String>, _> = items.iter().map(serde_json::to_string).collect();
        Ok(format!("[\n    {}\n  ]", l?.join(",\n    ")))
    };
    let text = format!(
        "{{\n  \"meta\": {},\n  \"summary\": {},\n  \"ratios\": {},\n  \"runs\": {}\n}}\n",
        serde_json::to_string_pretty(meta)?.replace('\n', "\n  "),
        lines(&summary)?,
        lines(&ratio_json)?,
        lines(&run_json)?
    );
    serde_json::from_str::<Value>(&text)?; // well-formed by construction; checked anyway
    Ok(text)
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), as loggers write them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
