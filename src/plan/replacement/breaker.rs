//! Step 2 of the planner: the circuit breaker, and the `ReplacementAllowed` condition.
//!
//! Nothing at all is replaced while the group is paused, while a process replacement needs is
//! suspended, while replacements keep failing (`maxConsecutiveFailures`), or while too many
//! Instances are Unhealthy; the condition says which, naming the Unhealthy Instances left
//! alone.
//!
//! # The rule: a breaker that knows correlated failure
//!
//! The breaker judges a [`View`]: the group's Unhealthy candidates and the Instances failing
//! below their threshold, each with its Node and zone, and the readiness of the Nodes around
//! them. Its question is whether the failure has a known, local cause (replace) or looks like
//! something replacement cannot fix or would make worse (hold).
//!
//! 1. **The Nodes in view** are those in the zones (`topology.kubernetes.io/zone`; Nodes
//!    without the label form one unnamed zone) where the group's Instances run; every Node
//!    when that leaves none. A Node is *down* when its `Ready` condition is `False` or
//!    `Unknown`.
//! 2. **Partition**: when every Node in view is down, that is what a control plane cut off
//!    from its Nodes looks like (the Nodes may be fine; only their heartbeats are lost), and a
//!    replacement could not run anywhere anyway. Nothing is replaced, whatever `maxUnhealthy`
//!    says (even `100%`), `TooManyUnhealthy` says so. Kubernetes' node lifecycle controller
//!    stops evictions in the same situation (every zone fully disrupted).
//! 3. **Local Node failure**: an Unhealthy Instance whose Node is down has a known cause. The
//!    failure is *local* when some Node in view is Ready and either at most half of the Nodes
//!    in view are down, or the down Nodes lie in at most half of the zones in view (a zone
//!    outage). Its Instances are then replaced onto the Ready Nodes (within `maxInFlight`,
//!    `minHealthyPercentage`, as any replacement) and do **not** count toward `maxUnhealthy`.
//!    A Node failure that is not local counts like any other failure. A partition, too,
//!    arrives Node by Node (the node lifecycle controller marks the Nodes that stopped
//!    heartbeating in passes 5 s apart), so the Instances of a Node down for less than
//!    [`NODE_SETTLE`] (10 s, from its `Ready` condition's transition time) are not replaced
//!    yet (counted only when the Node failure is not local): by then the rest of a partition
//!    has arrived and rule 2 holds. Nothing on a NotReady Node is urgent in comparison: the
//!    node lifecycle controller itself waits 40 s before it calls a silent Node Unknown.
//!    A partition *ends* Node by Node as well (each kubelet posts its status again on its own
//!    schedule), and the first Node back makes the Nodes still down look like a local
//!    failure, down for long. So when a Node in view turned Ready while the breaker held, or
//!    less than [`NODE_SETTLE`] after it let go, the Instances on Nodes still down settle the
//!    same way until [`NODE_SETTLE`] after the latest such return. Nodes that come back more
//!    than [`NODE_SETTLE`] apart are not waited for, and a Node that keeps failing into a
//!    partition and coming back keeps holding them (replacements would land on it).
//! 4. **A failure that is still spreading counts** (the contract's "never let one replacement
//!    through while a mass failure is still arriving"). Probe verdicts arrive up to one probe
//!    interval apart (each target has its own random phase), so when every Instance fails at
//!    once the first verdict is in before the others. Two things make the breaker see the
//!    whole failure:
//!    * Instances **failing below their threshold** (healthDetail `Warning`: probe failures
//!      below `unhealthyThreshold`, an `unhealthyConditions` rule not yet held `forSeconds`)
//!      count toward `maxUnhealthy` as if Unhealthy (they are not replaced, of course);
//!    * a **fresh probe verdict settles**: an Instance made Unhealthy by its probe (reason
//!      `ProbeFailed`) less than one probe `intervalSeconds` ago (measured from its `Healthy`
//!      condition's transition time) counts, but is not replaced yet: by then every other
//!      target has been probed at least once since the failure began, so a mass failure is
//!      seen as one (this covers `unhealthyThreshold: 1`, where there is no `Warning` stage,
//!      and verdicts still on their way to the store). The planner looks again when it ends.
//!
//!    * a **recovery still arriving settles** too: while another Instance's verdict turned
//!      `Healthy` (after it went in service: a launch is no recovery) less than one probe
//!      interval plus the probe timeout ago, while the breaker held or less than that long
//!      after it let go (so flaky members of a healthy group never hold a dead one), an Instance
//!      Unhealthy by its probe counts but is not replaced yet: when a mass failure ends, the
//!      last targets recover up to that long after the first (a probe that hung when the
//!      endpoint came back still times out), and the breaker, no longer tripped by the first
//!      recoveries, must not replace them in that moment.
//!
//!    Settling applies only when the breaker can trip (`maxUnhealthy` below 100%) and only to
//!    probe verdicts, the only ones whose arrival is spread out on purpose: a Pod deleted out
//!    of band or gone, a Pod that exited or an `autoheal.dev/health=Unhealthy` mark is known
//!    the moment it happens and is replaced at once, with no added delay (a Node NotReady
//!    settles by rule 3).
//! 5. **Too many**: when more Instances count (Unhealthy not explained by a local Node
//!    failure, settling, failing below their threshold) than `maxUnhealthy`, nothing at all is
//!    replaced, the local Node failures included.
//!
//! The `TooManyUnhealthy` message names the counted Instances, then lists every Instance in
//! view grouped by zone and Node (`zone a: Node n1 (NotReady): web-1, web-2 (failing below
//! its threshold); ...`), so a correlated failure shows as one place. It says nothing that
//! time alone changes (which verdicts still settle), so it is rewritten only when the
//! evidence changes; and time alone never turns a stop into a go (settling members count
//! before and after), so a stopped plan needs no requeue for them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{
    EventType, Index, Limits, PlannedEvent, ReplacementInputs, ReplacementMemory, add, excluded,
};
use crate::api::conditions::DesiredCondition;
use crate::api::names::reason;
use crate::api::{CONDITION_REPLACEMENT_ALLOWED, Process, ScalingGroupSpec};
use crate::api::{HealthDetail, HealthStatus};
use crate::plan::{InstanceView, NodeView};

/// Whether replacement may proceed.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Replacement may proceed, within the budget.
    Proceed,
    /// Nothing is replaced: the `ReplacementAllowed=False` condition says why.
    Stop(DesiredCondition),
}

/// How an Instance stands in the breaker's [`View`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Unhealthy on a down Node while the Node failure is local: replaced, not counted.
    NodeDown,
    /// Unhealthy on a Node down for less than [`NODE_SETTLE`] (or while a partition is ending)
    /// while the Node failure looks local: not counted, not replaced yet (more Nodes may be
    /// going down, or coming back).
    NodeSettling,
    /// Unhealthy: counted (on a down Node too, when the Node failure is not local).
    Unhealthy,
    /// Unhealthy by a probe verdict younger than one probe interval (or while the recoveries
    /// of a mass failure are still arriving), or on a Node down for less than [`NODE_SETTLE`]
    /// (or while a partition is ending) when the Node failure is not local: counted, not
    /// replaced yet.
    Settling,
    /// Healthy but failing below its threshold (healthDetail `Warning`): counted.
    Failing,
}

/// One Instance in the breaker's [`View`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The Instance name.
    pub name: String,
    /// Its Node, if known.
    pub node: Option<String>,
    /// Its zone, if known (the Node's label, else the Instance's `status.zone`).
    pub zone: Option<String>,
    /// Whether its Node is down (`Ready` False or Unknown).
    pub node_down: bool,
    /// How it stands.
    pub standing: Standing,
}

impl Member {
    /// Whether it counts toward `maxUnhealthy`.
    pub fn counted(&self) -> bool {
        !matches!(self.standing, Standing::NodeDown | Standing::NodeSettling)
    }
}

/// The Nodes in the breaker's view (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// How many Nodes are in view.
    pub total: usize,
    /// The down Nodes in view, sorted.
    pub down: Vec<String>,
    /// How many zones the Nodes in view lie in.
    pub zones: usize,
    /// How many of them hold a down Node.
    pub zones_with_down: usize,
}

impl NodeFacts {
    /// Every Node in view is down (and there is one): what a partition looks like.
    pub fn all_down(&self) -> bool {
        self.total > 0 && self.down.len() == self.total
    }

    /// A Node failure is local: some Node in view is Ready, and at most half of them are down
    /// or the down ones lie in at most half of the zones.
    pub fn local(&self) -> bool {
        !self.all_down()
            && (2 * self.down.len() <= self.total || 2 * self.zones_with_down <= self.zones)
    }
}

/// What the breaker judges: the Unhealthy candidates and the Instances failing below their
/// threshold, with their place, and the Nodes around them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The candidates for replacement, sorted by name.
    pub unhealthy: Vec<String>,
    /// The candidates and the Instances failing below their threshold, sorted by name.
    pub members: Vec<Member>,
    /// The Nodes in view.
    pub nodes: NodeFacts,
    /// When the earliest settling verdict has settled.
    pub settle_until: Option<Timestamp>,
}

impl View {
    /// The view of Unhealthy candidates `unhealthy` alone: no place, no Node, nothing spreading.
    pub fn plain(unhealthy: &[String]) -> Self {
        Self {
            unhealthy: unhealthy.to_vec(),
            members: unhealthy
                .iter()
                .map(|n| Member {
                    name: n.clone(),
                    node: None,
                    zone: None,
                    node_down: false,
                    standing: Standing::Unhealthy,
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Builds the view of the group's Instances (`index`), its candidates `unhealthy` and the
    /// Nodes of `inputs` (see the module documentation).
    pub fn of(
        inputs: &ReplacementInputs<'_>,
        limits: &Limits,
        index: &Index<'_>,
        unhealthy: &[String],
    ) -> Self {
        let nodes: BTreeMap<&str, &NodeView> =
            inputs.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let zone_of = |i: &InstanceView| -> Option<String> {
            match i.placement.node.as_deref().and_then(|n| nodes.get(n)) {
                Some(n) => n.zone.clone(),
                None => i.placement.zone.clone(),
            }
        };
        let zones: BTreeSet<Option<String>> = index
            .values()
            .filter(|i| i.counts_toward_capacity() && i.placement.node.is_some())
            .map(|i| zone_of(i))
            .collect();
        // By name (the last of duplicate names wins), so sorted and counted once.
        let mut in_view: Vec<&NodeView> = nodes
            .values()
            .copied()
            .filter(|n| zones.contains(&n.zone))
            .collect();
        if in_view.is_empty() {
            in_view = nodes.values().copied().collect();
        }
        let down: Vec<String> = in_view
            .iter()
            .filter(|n| !n.ready)
            .map(|n| n.name.clone())
            .collect();
        let facts = NodeFacts {
            total: in_view.len(),
            zones: in_view
                .iter()
                .map(|n| &n.zone)
                .collect::<BTreeSet<_>>()
                .len(),
            zones_with_down: in_view
                .iter()
                .filter(|n| !n.ready)
                .map(|n| &n.zone)
                .collect::<BTreeSet<_>>()
                .len(),
            down,
        };
        let local = facts.local();
        // Settling only matters when the breaker can trip, and only for probe verdicts.
        let settle = inputs
            .spec
            .health_check
            .probe
            .as_ref()
            .filter(|_| limits.max_unhealthy.is_some())
            .map(|p| SignedDuration::from_secs(i64::from(p.interval_seconds.max(1))));
        // A recovery arrives as spread out as a failure (each target has its own phase, and a
        // probe that hung when the endpoint came back still has to time out): while another
        // Instance's verdict turned Healthy less than one probe interval plus timeout ago, a
        // probe verdict of Unhealthy may be the next to recover, so it settles until then.
        let recovery_settles_at = inputs
            .spec
            .health_check
            .probe
            .as_ref()
            .filter(|_| limits.max_unhealthy.is_some())
            .and_then(|p| {
                let window = SignedDuration::from_secs(
                    i64::from(p.interval_seconds.max(1)) + i64::from(p.timeout_seconds.max(1)),
                );
                // A recovery is a verdict turned Healthy after the Instance went in service; a
                // launch (Healthy from its first status, before it is in service) is none, so
                // a group that keeps launching does not hold its probe failures.
                // Only a recovery while the breaker holds, or within one window of its letting
                // go: in a group whose breaker is far from tripping, the recoveries of flaky
                // members must not hold a dead Instance for ever.
                index
                    .values()
                    .filter(|i| {
                        i.counts_toward_capacity() && i.health == Some(HealthStatus::Healthy)
                    })
                    .filter_map(|i| i.health_since.filter(|t| Some(*t) > i.in_service_since))
                    .filter(|t| recovery_while_tripped(inputs, *t, window))
                    .max()
                    .and_then(|t| add(t, window))
            })
            .filter(|end| *end > inputs.now);
        // A partition ends Node by Node too (kubelets post their status again up to one
        // status interval apart): while another Node in view came back less than
        // NODE_SETTLE ago, while the breaker held or just after, a Node still down may be the
        // next to come back, and its failure, which the first Node back makes look local,
        // settles.
        let node_recovery_settles_at = in_view
            .iter()
            .filter(|n| n.ready)
            .filter_map(|n| n.since)
            .filter(|t| recovery_while_tripped(inputs, *t, NODE_SETTLE))
            .max()
            .and_then(|t| add(t, NODE_SETTLE))
            .filter(|end| *end > inputs.now);
        let mut settle_until = None;
        let mut members = Vec::new();
        for i in index.values() {
            let candidate = unhealthy.binary_search(&i.name).is_ok();
            let failing = !candidate
                && i.counts_toward_capacity()
                && !i.is_unhealthy()
                && !excluded(i)
                && i.detail == Some(HealthDetail::Warning);
            if !candidate && !failing {
                continue;
            }
            let down_node = i
                .placement
                .node
                .as_deref()
                .and_then(|n| nodes.get(n))
                .filter(|n| !n.ready);
            let node_down = down_node.is_some();
            let node_settles_at = down_node
                .and_then(|n| n.since)
                .and_then(|t| add(t, NODE_SETTLE))
                .filter(|end| *end > inputs.now)
                .max(node_recovery_settles_at.filter(|_| node_down));
            let probe_failed = i.health_reason.as_deref() == Some(PROBE_FAILED);
            let settles_at = settle
                .filter(|_| probe_failed)
                .and_then(|d| i.health_since.and_then(|t| add(t, d)))
                .filter(|end| *end > inputs.now)
                .max(recovery_settles_at.filter(|_| probe_failed && candidate));
            let mut settles = |end: Timestamp| {
                settle_until = Some(settle_until.map_or(end, |u: Timestamp| u.min(end)));
            };
            let standing = if failing {
                Standing::Failing
            } else if let Some(end) = node_settles_at {
                // A Node that went down moments ago: more may follow.
                settles(end);
                if local {
                    Standing::NodeSettling
                } else {
                    Standing::Settling
                }
            } else if node_down && local {
                Standing::NodeDown
            } else if let Some(end) = settles_at {
                settles(end);
                Standing::Settling
            } else {
                Standing::Unhealthy
            };
            members.push(Member {
                name: i.name.clone(),
                node: i.placement.node.clone(),
                zone: zone_of(i),
                node_down,
                standing,
            });
        }
        Self {
            unhealthy: unhealthy.to_vec(),
            members,
            nodes: facts,
            settle_until,
        }
    }

    /// The members counted toward `maxUnhealthy`.
    pub fn counted(&self) -> Vec<&Member> {
        self.members.iter().filter(|m| m.counted()).collect()
    }

    /// The candidates whose probe verdict or Node failure is still settling: not replaced
    /// yet.
    pub fn settling(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|m| matches!(m.standing, Standing::Settling | Standing::NodeSettling))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Every Node in view is down while there are candidates: nothing is replaced.
    pub fn partition(&self) -> bool {
        self.nodes.all_down() && !self.unhealthy.is_empty()
    }
}

/// Whether a recovery at `at` (a verdict turned Healthy, a Node turned Ready) came while the
/// breaker holds (`ReplacementAllowed` False with `TooManyUnhealthy`, by the condition the
/// group's status shows) or less than `window` after it let go (the condition turned True),
/// so it may be one of a mass failure's recoveries, with more on their way.
fn recovery_while_tripped(
    inputs: &ReplacementInputs<'_>,
    at: Timestamp,
    window: SignedDuration,
) -> bool {
    inputs.previous_condition.is_some_and(|c| {
        (c.status == "False" && c.reason == reason::TOO_MANY_UNHEALTHY)
            || (c.status == "True"
                && add(c.last_transition_time.0, window).is_some_and(|end| at < end))
    })
}

/// The `Healthy` condition reason of a verdict decided by the probe.
const PROBE_FAILED: &str = "ProbeFailed";

/// How long a Node must have been down before the failure of its Instances is judged local:
/// twice the node lifecycle controller's monitor period (5 s), within which it marks every
/// Node that stopped heartbeating, so that a partition arriving Node by Node is seen whole.
pub const NODE_SETTLE: SignedDuration = SignedDuration::from_secs(10);

/// Step 2: the circuit breaker. Stops replacement, in order of precedence, when the group is
/// paused ([`paused`]), a process is suspended ([`suspended`]), replacements keep failing
/// ([`keeps_failing`]) or too many Instances are Unhealthy ([`too_many_unhealthy`]: a
/// partition, or more counted than `maxUnhealthy`). `view` is the breaker's [`View`] (its
/// `unhealthy` are the candidates, sorted by name); `memory` is the judged one.
pub fn breaker(
    inputs: &ReplacementInputs<'_>,
    limits: &Limits,
    memory: &ReplacementMemory,
    view: &View,
) -> Gate {
    let unhealthy = &view.unhealthy;
    let stop = paused(inputs.paused, unhealthy)
        .or_else(|| suspended(inputs.spec, unhealthy))
        .or_else(|| keeps_failing(limits, memory, unhealthy))
        .or_else(|| too_many_unhealthy(inputs.spec, limits, view));
    match stop {
        Some(condition) => Gate::Stop(condition),
        None => Gate::Proceed,
    }
}

/// `; 2 Unhealthy instance(s) are not replaced: a, b`, or nothing when none is Unhealthy.
fn not_replaced(unhealthy: &[String]) -> String {
    if unhealthy.is_empty() {
        String::new()
    } else {
        format!(
            "; {} Unhealthy instance(s) are not replaced: {}",
            unhealthy.len(),
            names(unhealthy)
        )
    }
}

/// `Paused` while the group is annotated `autoheal.dev/paused=true`.
pub fn paused(paused: bool, unhealthy: &[String]) -> Option<DesiredCondition> {
    paused.then(|| {
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::PAUSED,
            format!(
                "The group is paused ({}=true): nothing is replaced{}",
                crate::api::names::ANNOTATION_PAUSED,
                not_replaced(unhealthy)
            ),
        )
    })
}

/// The suspended processes that stop replacement (`HealthCheck`, `ReplaceUnhealthy`,
/// `Terminate`, `Launch`), by name.
pub fn suspended_for_replacement(spec: &ScalingGroupSpec) -> Vec<&'static str> {
    [
        (Process::HealthCheck, "HealthCheck"),
        (Process::ReplaceUnhealthy, "ReplaceUnhealthy"),
        (Process::Terminate, "Terminate"),
        (Process::Launch, "Launch"),
    ]
    .into_iter()
    .filter(|(p, _)| spec.is_suspended(*p))
    .map(|(_, n)| n)
    .collect()
}

/// `Suspended` while `HealthCheck`, `ReplaceUnhealthy`, `Terminate` or `Launch` is suspended
/// (replacement needs both Terminate and Launch), naming them.
pub fn suspended(spec: &ScalingGroupSpec, unhealthy: &[String]) -> Option<DesiredCondition> {
    let suspended = suspended_for_replacement(spec);
    if suspended.is_empty() {
        return None;
    }
    let why = if spec.is_suspended(Process::HealthCheck) {
        "health verdicts are shown but not acted on"
    } else {
        "Unhealthy instances are not replaced"
    };
    Some(DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::SUSPENDED,
        format!(
            "Suspended process(es) {}: {why}{}",
            suspended.join(", "),
            not_replaced(unhealthy)
        ),
    ))
}

/// `ReplacementsKeepFailing` once the failure count reaches `maxConsecutiveFailures`, naming
/// the recent failures and the failing template.
pub fn keeps_failing(
    limits: &Limits,
    memory: &ReplacementMemory,
    unhealthy: &[String],
) -> Option<DesiredCondition> {
    if memory.consecutive_failures < limits.max_consecutive_failures {
        return None;
    }
    let failed = if memory.recent_failures.is_empty() {
        String::new()
    } else {
        format!(" ({})", names(&memory.recent_failures))
    };
    let template = memory
        .failing_template_hash
        .as_deref()
        .map(|h| format!(" of template {}", short(h)))
        .unwrap_or_default();
    Some(DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::KEEP_FAILING,
        format!(
            "{} replacements{template} in a row{failed} were Unhealthy when their health check grace period ended (maxConsecutiveFailures {}): replacement is stopped until the template changes or the group is annotated {}=<new value>{}",
            memory.consecutive_failures,
            limits.max_consecutive_failures,
            crate::api::names::ANNOTATION_RESET_REPLACEMENT_FAILURES,
            not_replaced(unhealthy)
        ),
    ))
}

/// `TooManyUnhealthy` when every Node in view is down while candidates exist (a partition,
/// whatever `maxUnhealthy` says), or while more Instances count than the resolved
/// `maxUnhealthy` (never when it is 100%); see the module documentation.
pub fn too_many_unhealthy(
    spec: &ScalingGroupSpec,
    limits: &Limits,
    view: &View,
) -> Option<DesiredCondition> {
    let spec_value = match &spec.replacement.max_unhealthy {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    if view.partition() {
        return Some(DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::TOO_MANY_UNHEALTHY,
            format!(
                "every Node in view is NotReady ({} of {}: {}): what a control plane cut off from its Nodes looks like, so nothing is replaced whatever maxUnhealthy says (maxUnhealthy: {spec_value}); {} instance(s) are Unhealthy ({}){}; by zone and node: {}",
                view.nodes.down.len(),
                view.nodes.total,
                names(&view.nodes.down),
                view.unhealthy.len(),
                names(&view.unhealthy),
                problems(limits),
                by_place(view)
            ),
        ));
    }
    let max = limits.max_unhealthy?;
    let counted = view.counted();
    if counted.len() as i64 <= i64::from(max) {
        return None;
    }
    let counted_names: Vec<String> = counted.iter().map(|m| m.name.clone()).collect();
    let spreading = counted.iter().any(|m| m.standing == Standing::Failing);
    let node_failure = if view.nodes.down.is_empty() {
        String::new()
    } else if view.nodes.local() {
        " (those on NotReady Nodes are not counted, but not replaced either)".to_string()
    } else {
        format!(
            " (NotReady Nodes {} of {} in view, in {} of {} zone(s), is no local failure: their instances count)",
            view.nodes.down.len(),
            view.nodes.total,
            view.nodes.zones_with_down,
            view.nodes.zones
        )
    };
    Some(DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::TOO_MANY_UNHEALTHY,
        format!(
            "{} instances are Unhealthy{} ({}), more than maxUnhealthy {max} (maxUnhealthy: {spec_value}){}: nothing is replaced until at most {max} are Unhealthy{node_failure}; by zone and node: {}",
            counted.len(),
            if spreading { " or failing" } else { "" },
            names(&counted_names),
            problems(limits),
            by_place(view)
        ),
    ))
}

/// The members of `view` grouped by zone and Node: `zone a: Node n1 (NotReady): x, y
/// (failing below its threshold); Node n2: z; no zone: Node n3: w; no Node: v`, at most 20
/// names shown.
pub fn by_place(view: &View) -> String {
    const SHOWN: usize = 20;
    // Zones and Nodes by name, those unknown last.
    type Place<'a> = (bool, Option<&'a str>, bool, Option<&'a str>);
    let mut places: BTreeMap<Place<'_>, Vec<&Member>> = BTreeMap::new();
    for m in &view.members {
        places
            .entry((
                m.zone.is_none(),
                m.zone.as_deref(),
                m.node.is_none(),
                m.node.as_deref(),
            ))
            .or_default()
            .push(m);
    }
    let down: BTreeSet<&str> = view.nodes.down.iter().map(String::as_str).collect();
    let mut shown = 0usize;
    let mut zones: Vec<String> = Vec::new();
    let mut current: Option<(Option<&str>, Vec<String>)> = None;
    for ((_, zone, _, node), members) in &places {
        if shown >= SHOWN {
            break;
        }
        let mut listed: Vec<String> = Vec::new();
        for m in members {
            if shown >= SHOWN {
                break;
            }
            shown += 1;
            // Nothing that time alone changes (settling ends): the message changes only with
            // the evidence, so the condition is written only then.
            listed.push(match m.standing {
                Standing::Failing => format!("{} (failing below its threshold)", m.name),
                Standing::Settling
                | Standing::NodeSettling
                | Standing::NodeDown
                | Standing::Unhealthy => m.name.clone(),
            });
        }
        let node_text = match node {
            Some(n) if down.contains(n) || members.iter().any(|m| m.node_down) => {
                format!("Node {n} (NotReady): {}", listed.join(", "))
            }
            Some(n) => format!("Node {n}: {}", listed.join(", ")),
            None => format!("no Node: {}", listed.join(", ")),
        };
        match current.as_mut() {
            Some((z, parts)) if z == zone => parts.push(node_text),
            _ => {
                if let Some((z, parts)) = current.take() {
                    zones.push(zone_text(z, &parts));
                }
                current = Some((*zone, vec![node_text]));
            }
        }
    }
    if let Some((z, parts)) = current.take() {
        zones.push(zone_text(z, &parts));
    }
    let mut s = zones.join("; ");
    if view.members.len() > shown {
        s.push_str(&format!(" and {} more", view.members.len() - shown));
    }
    s
}

/// `zone a: Node n1: x; Node n2: y` (`no zone: ...` without one).
fn zone_text(zone: Option<&str>, parts: &[String]) -> String {
    match zone {
        Some(z) => format!("zone {z}: {}", parts.join("; ")),
        None => format!("no zone: {}", parts.join("; ")),
    }
}

/// ` (maxInFlight "x" is not understood; ...)`, or nothing when every limit was understood.
fn problems(limits: &Limits) -> String {
    if limits.problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", limits.problems.join("; "))
    }
}

/// The condition once replacement proceeds: `BackingOff` when `backing_off` (a candidate waits
/// for the backoff after failures to end at `until`), else `ReplacementAllowed`; both True,
/// with the resolved limits.
pub fn allowed_condition(
    limits: &Limits,
    memory: &ReplacementMemory,
    unhealthy: &[String],
    backing_off: bool,
    until: Option<Timestamp>,
) -> DesiredCondition {
    let limits_text = format!(
        "maxUnhealthy {}, maxInFlight {}{}",
        limits
            .max_unhealthy
            .map_or("unlimited".to_string(), |m| m.to_string()),
        limits.max_in_flight,
        problems(limits)
    );
    if backing_off {
        let until = until.map_or("later".to_string(), |t| t.to_string());
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            true,
            reason::BACKING_OFF,
            format!(
                "{} replacement(s) in a row failed (maxConsecutiveFailures {}): the next replacement waits until {until}; Unhealthy: {} ({limits_text})",
                memory.consecutive_failures,
                limits.max_consecutive_failures,
                names(unhealthy)
            ),
        )
    } else {
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            true,
            reason::ALLOWED,
            format!("Unhealthy instances are replaced ({limits_text})"),
        )
    }
}

/// The Event announcing a change of the condition from `previous`, once: a Warning whenever
/// it turns to (or its message changes while) `TooManyUnhealthy` or `ReplacementsKeepFailing`;
/// a Normal one when it turns False for another reason, or back to True. Nothing when it is
/// unchanged.
pub fn condition_event(
    previous: Option<&Condition>,
    condition: &DesiredCondition,
) -> Option<PlannedEvent> {
    let changed = previous.is_none_or(|p| {
        p.status != condition.status
            || p.reason != condition.reason
            || p.message != condition.message
    });
    if !changed {
        return None;
    }
    let was_false = previous.is_some_and(|p| p.status == "False");
    if condition.status == "False" {
        let warning = condition.reason == reason::TOO_MANY_UNHEALTHY
            || condition.reason == reason::KEEP_FAILING;
        let same_reason =
            previous.is_some_and(|p| p.status == "False" && p.reason == condition.reason);
        (warning || !same_reason).then(|| PlannedEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason_str(&condition.reason),
            instance: None,
            message: condition.message.clone(),
        })
    } else {
        was_false.then(|| PlannedEvent {
            type_: EventType::Normal,
            reason: reason::ALLOWED,
            instance: None,
            message: format!("Replacement resumes: {}", condition.message),
        })
    }
}

/// The `&'static str` of a condition reason this module sets.
fn reason_str(r: &str) -> &'static str {
    [
        reason::TOO_MANY_UNHEALTHY,
        reason::KEEP_FAILING,
        reason::SUSPENDED,
        reason::PAUSED,
        reason::BACKING_OFF,
    ]
    .into_iter()
    .find(|k| *k == r)
    .unwrap_or(reason::ALLOWED)
}

/// The first 20 names, comma-separated, then `and N more`.
pub(super) fn names(list: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = list
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    s
}

/// The first 12 characters of a template hash.
fn short(hash: &str) -> &str {
    hash.get(..hash.len().min(12)).unwrap_or(hash)
}
