//! Settings of one Raft member, in ticks: the caller decides how long a tick
//! is (the server uses 10 ms; the simulator 1 ms of virtual time).

use super::types::NodeId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This member's id; never 0.
    pub id: NodeId,
    /// Election timeouts are drawn uniformly from
    /// `[election_tick_min, election_tick_max)` each time the timer is reset
    /// (§5.2: randomized timeouts make split votes rare).
    pub election_tick_min: u32,
    pub election_tick_max: u32,
    /// How often a leader sends heartbeats; well below `election_tick_min`
    /// (§5.6: broadcastTime ≪ electionTimeout).
    pub heartbeat_tick: u32,
    /// PreVote (§9.6 of the thesis): a member that was cut off does not bump
    /// the term of the cluster when it returns.
    pub pre_vote: bool,
    /// CheckQuorum (§6.2 of the thesis): a leader that has not heard from a
    /// majority for an election timeout steps down; followers that heard from a
    /// leader within the minimum election timeout ignore vote requests (§4.2.3).
    pub check_quorum: bool,
    /// Most AppendEntries in flight to one follower while pipelining.
    pub max_inflight_appends: usize,
    /// Upper bound on the entry bytes of one AppendEntries message.
    pub max_append_bytes: usize,
    /// A learner is promoted only once its match index is within this many
    /// entries of the commit index.
    pub max_promotion_lag: u64,
    /// Seeds the member's own random source for election timeouts, so the
    /// simulator can replay a run exactly.
    pub seed: u64,
}

impl Config {
    /// The article's and the paper's defaults (150–300 ms elections, 50 ms
    /// heartbeats) expressed in ticks of `tick_ms`.
    pub fn with_tick_ms(id: NodeId, tick_ms: u32, seed: u64) -> Config {
        let t = tick_ms.max(1);
        Config {
            id,
            election_tick_min: 150 / t,
            election_tick_max: 300 / t,
            heartbeat_tick: (50 / t).max(1),
            pre_vote: true,
            check_quorum: true,
            max_inflight_appends: 256,
            max_append_bytes: 1 << 20,
            max_promotion_lag: 1000,
            seed,
        }
    }

    /// Checks the settings; the message says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("member id 0 is reserved; use an id of 1 or more".into());
        }
        if self.election_tick_min == 0 {
            return Err("the minimum election timeout must be at least one tick".into());
        }
        if self.election_tick_min >= self.election_tick_max {
            return Err(format!(
                "the election timeout range is empty: minimum {} ticks is not below maximum {} ticks",
                self.election_tick_min, self.election_tick_max
            ));
        }
        if self.heartbeat_tick == 0 || self.heartbeat_tick >= self.election_tick_min {
            return Err(format!(
                "the heartbeat interval ({} ticks) must be at least one tick and below the minimum election timeout ({} ticks)",
                self.heartbeat_tick, self.election_tick_min
            ));
        }
        if self.max_inflight_appends == 0 {
            return Err("max_inflight_appends must be at least 1".into());
        }
        if self.max_append_bytes == 0 {
            return Err("max_append_bytes must be at least 1".into());
        }
        Ok(())
    }
}
