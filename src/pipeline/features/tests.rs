//! Unit tests of the feature stage's clock, data-quality alarms and
//! per-asset drops.

use super::*;
use crate::core::contract::sample_metadata;
use crate::core::detect::AlertKind;
use crate::core::quality::QualityKind;

const S: i64 = 1_000_000_000;

fn stage(stale_after_periods: u32) -> FeatureStage {
    let text = format!(
        "{}\n[alerts]\nstale_after_periods = {stale_after_periods}\n",
        crate::config::tests::MINIMAL
    );
    let cfg = crate::config::tests::parse(&text, &[]).unwrap();
    let mut st = FeatureStage::new(
        vec![ModelSlot::new("pump", sample_metadata())],
        Binder::single("pump"),
        StageSettings::default(),
        Arc::new(Metrics::default()),
    );
    st.set_quality_rules(QualityRules::from_config(&cfg));
    st
}

fn msg(values: &[(&str, f64)], ts: i64) -> Message {
    Message {
        asset: "p1".into(),
        ts: Some(ts),
        values: values.iter().map(|(c, v)| (c.to_string(), *v)).collect(),
        non_finite: 0,
    }
}

#[test]
fn the_clock_closes_a_silent_assets_last_frame_and_raises_then_clears_stale() {
    let mut st = stage(5);
    let mut out = Vec::new();
    // Frames of both channels for 8 ticks (the window), then a tick
    // where only channel a spoke: it waits for b.
    for k in 0..8 {
        st.push_message(&msg(&[("a", 1.0), ("b", 2.0)], k * S), k * S, &mut out);
    }
    assert_eq!(out.len(), 1);
    st.push_message(&msg(&[("a", 1.5)], 8 * S), 8 * S, &mut out);
    assert_eq!(out.len(), 1, "tick 8 waits for channel b");
    // Not silent yet (lateness 2 s): nothing happens.
    st.tick(9 * S, Some(0), &mut out);
    assert_eq!(out.len(), 1);
    assert!(st.take_quality().is_empty());
    // Silent for longer than the lateness: the last frame closes.
    st.tick(11 * S, Some(0), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].end_ts, 8 * S);
    // Five periods of silence: stale, naming no channel.
    st.tick(13 * S, Some(0), &mut out);
    let q = st.take_quality();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].event.kind, QualityKind::Stale);
    assert_eq!(q[0].event.state, AlertKind::Raised);
    assert_eq!(q[0].event.channel, None);
    assert_eq!(&*q[0].binding.asset, "p1");
    // Disconnected: nothing is decided.
    st.tick(20 * S, None, &mut out);
    assert!(st.take_quality().is_empty());
    // Data returns: cleared.
    st.push_message(&msg(&[("a", 1.0), ("b", 2.0)], 20 * S), 20 * S, &mut out);
    st.tick(20 * S, Some(0), &mut out);
    let q = st.take_quality();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].event.state, AlertKind::Cleared);
}

#[test]
fn a_stale_alarm_open_before_a_restart_clears_when_data_returns() {
    let mut st = stage(5);
    st.restore_quality(vec![
        ("p1".into(), "stale".into(), 3 * S),
        ("p1".into(), "stuck:nope".into(), 3 * S),
    ]);
    let mut out = Vec::new();
    st.push_message(&msg(&[("a", 1.0), ("b", 2.0)], 100 * S), 100 * S, &mut out);
    st.tick(100 * S, Some(0), &mut out);
    let q = st.take_quality();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].event.state, AlertKind::Cleared);
    assert_eq!(q[0].event.start_ts, 3 * S);
}

#[test]
fn unknown_channels_are_counted_per_asset_with_their_names() {
    let mut st = stage(0);
    let mut out = Vec::new();
    st.push_message(&msg(&[("a", 1.0), ("B", 2.0)], 0), 0, &mut out);
    let drops = st.metrics.asset_drops();
    assert_eq!(drops.len(), 1);
    assert_eq!(
        (
            drops[0].asset.as_str(),
            drops[0].reason,
            drops[0].names.clone()
        ),
        ("p1", "unknown_channel", vec!["B".to_string()])
    );
}
