//! How the load generator publishes its measured events: the three modes,
//! which requests each publisher sends, and the per-publisher order check.
//!
//! Every mode publishes each tick `0..events` exactly once, so the clients'
//! bitmaps ([`crate::stats::Seen`]) count lost and duplicated ticks the same
//! way in all of them. Ordering is only defined per publisher: two
//! publishers' requests race each other, so a client may see publisher 1's
//! tick 9 before publisher 0's tick 8 on a correct server. [`Order`] checks
//! each publisher's ticks against that publisher's earlier ones only.

use std::ops::Range;

use anyhow::bail;

/// What users' traffic a run imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Back-to-back requests of `--batch` events (100) each, over one
    /// connection: the server amortises its per-request and per-write costs
    /// over the batch, which flatters it.
    Burst,
    /// One event per `POST /publish`, each waiting for its reply before the
    /// next (back-to-back, or on `--rate`'s schedule): what users do.
    Single,
    /// `--publishers` keep-alive connections (8), each doing `single` in
    /// parallel with the others.
    Concurrent,
}

impl Mode {
    /// The name printed in the `RESULT` line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Burst => "burst",
            Mode::Single => "single",
            Mode::Concurrent => "concurrent",
        }
    }
}

/// Which publisher sends which ticks, in which requests.
///
/// The ticks are cut into requests of `batch` consecutive ticks; request `k`
/// goes to publisher `k % publishers`, and each publisher sends its requests
/// in order, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The mode this plan carries out.
    pub mode: Mode,
    /// Measured ticks, `0..events`.
    pub events: u64,
    /// Ticks per request.
    pub batch: u64,
    /// Publishing connections working in parallel.
    pub publishers: usize,
}

impl Plan {
    /// The plan for `mode`; `batch` applies to `burst` only, `publishers`
    /// to `concurrent` only (the other modes refuse anything but 1), and a
    /// `rate` paces single requests, so `burst` refuses one.
    pub fn new(
        mode: Mode,
        events: u64,
        batch: usize,
        publishers: Option<usize>,
        rate: f64,
    ) -> anyhow::Result<Plan> {
        let publishers = match (mode, publishers) {
            (Mode::Concurrent, p) => p.unwrap_or(8),
            (_, None | Some(1)) => 1,
            (_, Some(p)) => bail!("--publishers {p} needs --mode concurrent"),
        };
        if publishers == 0 {
            bail!("--publishers must be at least 1");
        }
        if mode == Mode::Burst && rate > 0.0 {
            bail!("--rate paces one event per request: use --mode single or concurrent");
        }
        let batch = match mode {
            Mode::Burst => batch.max(1) as u64,
            Mode::Single | Mode::Concurrent => 1,
        };
        Ok(Plan {
            mode,
            events,
            batch,
            publishers,
        })
    }

    /// The requests publisher `p` sends, in order, as ranges of ticks.
    pub fn requests(&self, p: usize) -> impl Iterator<Item = Range<i64>> + '_ {
        let requests = self.events.div_ceil(self.batch);
        (p as u64..requests).step_by(self.publishers).map(move |k| {
            let start = k * self.batch;
            start as i64..(start + self.batch).min(self.events) as i64
        })
    }

    /// The publisher that sends tick `seq`.
    pub fn publisher_of(&self, seq: u64) -> usize {
        ((seq / self.batch) % self.publishers as u64) as usize
    }
}

/// One client's order check: a tick that arrives after a later tick of the
/// same publisher counts as reordered. Ticks of different publishers are
/// never compared (their order is not defined).
#[derive(Debug, Clone)]
pub struct Order {
    last: Vec<Option<u64>>,
    reordered: u64,
}

impl Order {
    /// Tracks `publishers` publishers.
    pub fn new(publishers: usize) -> Order {
        Order {
            last: vec![None; publishers.max(1)],
            reordered: 0,
        }
    }

    /// Records the first arrival of tick `seq` from `publisher`.
    pub fn record(&mut self, publisher: usize, seq: u64) {
        let last = &mut self.last[publisher];
        match *last {
            Some(l) if seq < l => self.reordered += 1,
            _ => *last = Some(seq),
        }
    }

    /// Ticks that arrived after a later tick of their publisher.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tick once, across all publishers, each in its publisher's order.
    fn covers_each_tick_once(plan: &Plan) {
        let mut seen = vec![0u32; plan.events as usize];
        for p in 0..plan.publishers {
            let mut previous = -1;
            for request in plan.requests(p) {
                assert!(request.start > previous, "publisher {p} goes forward");
                assert!(request.end - request.start <= plan.batch as i64);
                for seq in request {
                    assert_eq!(plan.publisher_of(seq as u64), p, "tick {seq}");
                    seen[seq as usize] += 1;
                    previous = seq;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{plan:?}: {seen:?}");
    }

    #[test]
    fn every_mode_publishes_every_tick_exactly_once() {
        for events in [0, 1, 7, 100, 1001] {
            covers_each_tick_once(&Plan::new(Mode::Burst, events, 100, None, 0.0).unwrap());
            covers_each_tick_once(&Plan::new(Mode::Single, events, 100, None, 200.0).unwrap());
            covers_each_tick_once(&Plan::new(Mode::Concurrent, events, 100, None, 0.0).unwrap());
            covers_each_tick_once(&Plan::new(Mode::Concurrent, events, 1, Some(3), 20.0).unwrap());
        }
    }

    #[test]
    fn modes_shape_the_requests() {
        let burst = Plan::new(Mode::Burst, 250, 100, None, 0.0).unwrap();
        assert_eq!(
            burst.requests(0).collect::<Vec<_>>(),
            [0..100, 100..200, 200..250]
        );
        let single = Plan::new(Mode::Single, 3, 100, None, 0.0).unwrap();
        assert_eq!(single.requests(0).collect::<Vec<_>>(), [0..1, 1..2, 2..3]);
        let conc = Plan::new(Mode::Concurrent, 10, 100, None, 0.0).unwrap();
        assert_eq!(conc.publishers, 8);
        assert_eq!(conc.requests(1).collect::<Vec<_>>(), [1..2, 9..10]);
        assert_eq!(conc.requests(7).collect::<Vec<_>>(), vec![7..8]);
    }

    #[test]
    fn contradictory_options_are_refused() {
        assert!(Plan::new(Mode::Burst, 10, 100, None, 200.0).is_err());
        assert!(Plan::new(Mode::Single, 10, 100, Some(8), 0.0).is_err());
        assert!(Plan::new(Mode::Concurrent, 10, 100, Some(0), 0.0).is_err());
        assert!(Plan::new(Mode::Single, 10, 100, Some(1), 0.0).is_ok());
    }

    #[test]
    fn order_is_checked_per_publisher_only() {
        let plan = Plan::new(Mode::Concurrent, 100, 1, Some(2), 0.0).unwrap();
        let mut order = Order::new(plan.publishers);
        // Publisher 1's tick 5 before publisher 0's tick 2: not a reorder.
        for seq in [0, 5, 2, 7, 4] {
            order.record(plan.publisher_of(seq), seq);
        }
        assert_eq!(order.reordered(), 0);
        // Publisher 0's tick 6 after its tick 8 is.
        order.record(plan.publisher_of(8), 8);
        order.record(plan.publisher_of(6), 6);
        assert_eq!(order.reordered(), 1);
        // One publisher: the global order.
        let mut single = Order::new(1);
        for seq in [0, 2, 1, 3] {
            single.record(0, seq);
        }
        assert_eq!(single.reordered(), 1);
    }
}
