//! The soak's final table and its verdict.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use super::{mib, witness::WitnessSummary, SoakArgs};

/// Everything printed in the final table.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) broker: String,
    pub(super) sweeps: HashMap<&'static str, f64>,
    pub(super) events_acked: f64,
    pub(super) faults_injected: u64,
    pub(super) upstream_failures: f64,
    pub(super) churned: Churned,
    pub(super) restarts: u32,
    pub(super) rss_start: u64,
    /// RSS once the service settled after churn and faults stopped.
    pub(super) rss_end: u64,
    /// RSS the moment churn stopped (shown, not judged).
    pub(super) rss_churn_stop: u64,
    pub(super) rss_peak: u64,
    pub(super) samples: Vec<(Duration, u64)>,
    pub(super) fold: FoldSummary,
    pub(super) mismatches: Vec<String>,
    pub(super) settle: Option<Duration>,
    pub(super) tasks: Vec<(String, f64)>,
    pub(super) task_failures: f64,
    pub(super) clean_exit: Option<bool>,
    /// Distinct events and fold mismatches of the from-the-beginning re-read.
    pub(super) reread: (usize, usize),
    pub(super) witness: Option<WitnessSummary>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Churned {
    pub(super) rounds: u64,
    pub(super) flapped: u64,
    pub(super) versions: u64,
    pub(super) added: u64,
    pub(super) removed: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FoldSummary {
    pub(super) records: u64,
    pub(super) distinct: usize,
    pub(super) agents: usize,
    pub(super) duplicates: u64,
    pub(super) seq_gaps: u64,
    pub(super) out_of_order: u64,
    pub(super) undecodable: u64,
    pub(super) errors: u64,
}

impl Report {
    /// The first RSS sample taken at least `after` into the run, else the start sample;
    /// never the end sample (the last one), which it is compared with.
    pub(super) fn baseline(&self, after: Duration) -> (Duration, u64) {
        let before_end = &self.samples[..self.samples.len().saturating_sub(1)];
        before_end
            .iter()
            .find(|(at, _)| *at >= after)
            .copied()
            .unwrap_or((Duration::ZERO, self.rss_start))
    }
}

pub(super) fn failures(r: &Report, args: &SoakArgs) -> Vec<String> {
    let mut out = Vec::new();
    if !r.mismatches.is_empty() {
        out.push(format!(
            "{} agents differ between the consumer's fold and the simulator (first: {})",
            r.mismatches.len(),
            r.mismatches[0]
        ));
    }
    if r.reread.0 < r.fold.distinct || r.reread.1 > 0 {
        out.push(format!(
            "re-reading the topic from the beginning found {} of {} events, {} agents differ",
            r.reread.0, r.fold.distinct, r.reread.1
        ));
    }
    let unaccounted = r.events_acked - r.fold.distinct as f64;
    if unaccounted > 0.0 {
        out.push(format!(
            "{unaccounted} events acknowledged to the service are not in the topic"
        ));
    }
    if r.fold.seq_gaps > 0 {
        out.push(format!("{} seq gaps (lost events)", r.fold.seq_gaps));
    }
    if r.fold.undecodable > 0 {
        out.push(format!("{} undecodable events", r.fold.undecodable));
    }
    if r.tasks.is_empty() || r.tasks.iter().any(|(_, v)| *v != 1.0) {
        out.push(format!("tasks not all up at the end: {:?}", r.tasks));
    }
    if r.task_failures > 0.0 {
        out.push(format!(
            "{} task exits with error or panic",
            r.task_failures
        ));
    }
    let (at, baseline) = r.baseline(args.rss_baseline_at);
    let mut rss_check = |what: String, rss: u64| {
        if rss as f64 > baseline as f64 * (1.0 + args.rss_growth) {
            out.push(format!(
                "RSS grew from {} (at {:.1}m) to {} at {what} (limit +{:.0}%)",
                mib(baseline),
                at.as_secs_f64() / 60.0,
                mib(rss),
                args.rss_growth * 100.0
            ));
        }
    };
    if let Some(&(t, rss)) = r.samples.last().filter(|(t, _)| *t > at) {
        let minutes = t.as_secs_f64() / 60.0;
        rss_check(format!("the last periodic sample ({minutes:.1}m)"), rss);
    }
    rss_check("the settled end".to_owned(), r.rss_end);
    if r.clean_exit != Some(true) {
        out.push("the service did not stop cleanly on SIGTERM".into());
    }
    out
}

/// The broker's own loss, seen by the witness. Not a failure of agentwatch: its events
/// are judged by the checks in [`failures`], which see any loss in its stream whatever
/// the cause; this says when the broker is to blame for (some of) them.
pub(super) fn broker_loss(r: &Report) -> Option<String> {
    let w = r.witness.as_ref().filter(|w| !w.lost.is_empty())?;
    Some(format!(
        "the broker lost {} of the {} records it acknowledged to the witness (first: #{}): \
         it loses acknowledged writes, with no agentwatch code involved",
        w.lost.len(),
        w.acked,
        w.lost[0]
    ))
}

pub(super) fn print_report(r: &Report, args: &SoakArgs, failures: &[String]) {
    let mut t = String::new();
    let row = |t: &mut String, k: &str, v: String| {
        let _ = writeln!(t, "  {k:<28} {v}");
    };
    let _ = writeln!(t, "\nsoak report");
    row(
        &mut t,
        "duration",
        humantime::format_duration(args.duration).to_string(),
    );
    row(&mut t, "agents", args.agents.to_string());
    row(&mut t, "broker", r.broker.clone());
    row(
        &mut t,
        "broker outages",
        format!(
            "{} (every {}, {} each)",
            r.restarts,
            humantime::format_duration(args.restart_every),
            humantime::format_duration(args.outage_length)
        ),
    );
    row(
        &mut t,
        "sweeps",
        format!(
            "{} success, {} partial, {} failed",
            r.sweeps.get("success").copied().unwrap_or(0.0),
            r.sweeps.get("partial").copied().unwrap_or(0.0),
            r.sweeps.get("failed").copied().unwrap_or(0.0)
        ),
    );
    row(
        &mut t,
        "upstream faults",
        format!(
            "{} injected (rate {}), {} failed calls seen",
            r.faults_injected, args.fault_rate, r.upstream_failures
        ),
    );
    let c = r.churned;
    row(
        &mut t,
        "churn",
        format!(
            "{} rounds: {} flaps, {} versions, {} added, {} removed",
            c.rounds, c.flapped, c.versions, c.added, c.removed
        ),
    );
    row(&mut t, "events acknowledged", r.events_acked.to_string());
    if let Some(w) = &r.witness {
        let first: Vec<String> = w.lost.iter().take(10).map(|n| format!("#{n}")).collect();
        row(
            &mut t,
            "broker witness",
            format!(
                "{} sent, {} acknowledged, {} failed, {} read back (last offset {:?}, \
                 watermarks {:?}), {} acknowledged but lost {}",
                w.sent,
                w.acked,
                w.failed,
                w.read_back,
                w.last_offset,
                w.watermarks,
                w.lost.len(),
                first.join(" ")
            ),
        );
    }
    let f = r.fold;
    row(
        &mut t,
        "consumer",
        format!(
            "{} records, {} distinct ids, {} re-delivered, {} seq gaps, {} out of order, {} errors",
            f.records, f.distinct, f.duplicates, f.seq_gaps, f.out_of_order, f.errors
        ),
    );
    row(
        &mut t,
        "fold vs simulator",
        match (&r.settle, r.mismatches.len()) {
            (Some(d), _) => format!(
                "{} agents, all equal (settled in {:.1}s)",
                f.agents,
                d.as_secs_f64()
            ),
            (None, n) => format!("{n} agents differ after {:?}", args.settle_timeout),
        },
    );
    row(
        &mut t,
        "re-read from the beginning",
        format!(
            "{} distinct events, {} agents differ from the simulator",
            r.reread.0, r.reread.1
        ),
    );
    let (at, baseline) = r.baseline(args.rss_baseline_at);
    row(
        &mut t,
        "RSS start/baseline/settled",
        format!(
            "{} / {} (at {:.1}m) / {}; at churn stop {}; peak {}",
            mib(r.rss_start),
            mib(baseline),
            at.as_secs_f64() / 60.0,
            mib(r.rss_end),
            mib(r.rss_churn_stop),
            mib(r.rss_peak)
        ),
    );
    let samples: Vec<String> = r
        .samples
        .iter()
        .map(|(at, rss)| format!("{:.1}m:{}", at.as_secs_f64() / 60.0, mib(*rss)))
        .collect();
    row(&mut t, "RSS samples", samples.join(" "));
    let tasks: Vec<String> = r.tasks.iter().map(|(k, v)| format!("{k}={v}")).collect();
    row(&mut t, "task_up at end", tasks.join(" "));
    row(
        &mut t,
        "task error/panic exits",
        r.task_failures.to_string(),
    );
    row(
        &mut t,
        "clean stop on SIGTERM",
        r.clean_exit.map_or("-".into(), |b| b.to_string()),
    );
    if let Some(loss) = broker_loss(r) {
        let _ = writeln!(t, "  BROKER                       {loss}");
        let _ = writeln!(
            t,
            "                               {}",
            if failures.is_empty() {
                "agentwatch's stream lost nothing this run (its checks below all hold)"
            } else {
                "some failures below may be the broker's, not agentwatch's"
            }
        );
    }
    if failures.is_empty() {
        let _ = writeln!(t, "  RESULT                       PASS");
    } else {
        let _ = writeln!(t, "  RESULT                       FAIL");
        for f in failures {
            let _ = writeln!(t, "    - {f}");
        }
        for m in r.mismatches.iter().take(10) {
            let _ = writeln!(t, "    mismatch: {m}");
        }
    }
    println!("{t}");
}
