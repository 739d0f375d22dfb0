//! The cells of the report's tables: figures, ratios and verdicts, shared
//! by the report and its goal rows.

use serde_json::Value;

pub(crate) fn ms(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |x| format!("{x:.1}"))
}

pub(crate) fn ratio(ours: &Value, reference: &Value) -> Option<f64> {
    let (o, r) = (ours.as_f64()?, reference.as_f64()?);
    (r > 0.0).then(|| o / r)
}

pub(crate) fn ratio_text(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

/// The chain point of `variant` at `attached` containers.
pub(crate) fn point<'a>(results: &'a Value, variant: &str, attached: u64) -> &'a Value {
    results["chain"][variant]
        .as_array()
        .and_then(|pts| {
            pts.iter()
                .find(|p| p["attached"].as_u64() == Some(attached))
        })
        .unwrap_or(&Value::Null)
}

pub(crate) fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not measured",
    }
}
