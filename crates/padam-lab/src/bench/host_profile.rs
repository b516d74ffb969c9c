//! `padam bench step --host-profile`: where the host time of an optimizer step goes, from the
//! `trace`-level spans of the `padam` crate (`step.*`, `fused.*`; listed in the docs of
//! `padam`'s optimizer module). A [`tracing_subscriber`] layer sums each span's busy time
//! (from enter to exit, inclusive of spans entered inside it) and its count, per span name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{span, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Count and total busy time per span name, filled by the layer that [`install`] sets.
#[derive(Clone, Default)]
pub struct SpanTimes(Arc<Mutex<BTreeMap<&'static str, (u64, Duration)>>>);

/// One span name's total over a measured interval.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanTotal {
    /// The span's name (`fused.launch`, ...).
    pub name: &'static str,
    /// How many times it was entered.
    pub count: u64,
    /// Total busy time, in milliseconds.
    pub total_ms: f64,
}

impl SpanTimes {
    /// The totals since the last call (or since install), by name; the counters restart.
    pub fn take(&self) -> Vec<SpanTotal> {
        let map = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        map.into_iter()
            .map(|(name, (count, total))| SpanTotal {
                name,
                count,
                total_ms: total.as_secs_f64() * 1e3,
            })
            .collect()
    }
}

/// When the span was last entered (kept in the span's extensions).
struct Entered(Instant);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().replace(Entered(Instant::now()));
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(Entered(t)) = span.extensions_mut().remove::<Entered>() else {
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(span.name()).or_default();
        entry.0 += 1;
        entry.1 += t.elapsed();
    }
}

/// Install the summing layer as the process's global subscriber, with the library's warnings
/// on stderr beside it (once; later calls return the same counters). Fails when another global
/// subscriber was set first.
pub fn install() -> anyhow::Result<SpanTimes> {
    static TIMES: OnceLock<SpanTimes> = OnceLock::new();
    if let Some(t) = TIMES.get() {
        return Ok(t.clone());
    }
    let times = SpanTimes::default();
    let filter = Targets::new().with_target("padam", tracing::Level::TRACE);
    let warnings = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing::level_filters::LevelFilter::WARN);
    let subscriber = (tracing_subscriber::registry())
        .with(times.clone().with_filter(filter))
        .with(warnings);
    tracing::subscriber::set_global_default(subscriber).map_err(|e| {
        anyhow::anyhow!("--host-profile: cannot install the span timer (another tracing subscriber is set: {e})")
    })?;
    Ok(TIMES.get_or_init(|| times).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_busy_time_and_counts_per_span_name() {
        let times = SpanTimes::default();
        let subscriber = tracing_subscriber::registry().with(times.clone());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let _outer = tracing::trace_span!("outer").entered();
                let _inner = tracing::trace_span!("inner").entered();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let totals = times.take();
        let names: Vec<_> = totals.iter().map(|t| (t.name, t.count)).collect();
        assert_eq!(names, [("inner", 3), ("outer", 3)]);
        assert!(totals.iter().all(|t| t.total_ms >= 6.0), "{totals:?}");
        assert!(times.take().is_empty(), "take restarts the counters");
    }
}
