//! Workflow DAGs: named steps, each a run template, wired by `depends_on`.
//!
//! This module is pure logic, in three parts:
//!
//! * [`validate`] checks a submitted [`WorkflowDef`] once, at submission, and
//!   returns a topological order — so the scheduler never meets a cycle or a
//!   dangling dependency at run time, and the client gets a 400 that names
//!   the problem.
//! * [`advance`] is the scheduler's step function: given every step's
//!   [`StepState`], which steps to start, which to skip, and whether the
//!   workflow is over. It is stateless and idempotent, so the scheduler can
//!   call it after every step transition (or after a crash) with whatever the
//!   database says.
//! * [`step_input`] defines how one step's output becomes the next step's
//!   input — the data contract task authors program against.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The most steps a workflow may have. Validation and [`advance`] are
/// linear, so this is not about speed but about bounding what one API
/// request can make the scheduler track.
pub const MAX_STEPS: usize = 10_000;

/// The longest allowed step name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// A workflow: a set of steps whose `depends_on` edges form a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowDef {
    /// The steps, in any order (dependencies need not come first). The
    /// order is used to break ties, e.g. between steps that become ready at
    /// the same time.
    #[schema(min_items = 1, max_items = 10000)]
    pub steps: Vec<StepDef>,
}

/// One step of a workflow.
///
/// Unknown fields are rejected so that a typo such as `dependsOn` is a 400
/// instead of a step that silently runs without waiting for anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Unique within the workflow: 1 to 64 characters from `A-Z a-z 0-9 _ -`
    /// (safe in URLs, file names and JSON keys without escaping).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// Steps that must finish before this one starts. With one dependency,
    /// this step's input is that step's output; with several, a JSON object
    /// of their outputs (see [`step_input`]).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// If true, this step failing does not fail the workflow, and the steps
    /// that depend on it still run (with whatever output it produced).
    #[serde(default)]
    pub allow_failure: bool,
    /// Makes this a map step: its run template runs once per split of the
    /// objects under a prefix (see [`crate::map`]), each split's JSON as
    /// the run's input, and a step depending on it gets the splits'
    /// outputs as a JSON array in split order (see [`step_input`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<crate::map::MapSpec>,
    /// The run template (module, function, input, limits…); validated by the
    /// API layer, opaque here.
    #[schema(value_type = crate::model::SubmitRun)]
    pub run: serde_json::Value,
}

/// Why a workflow definition was rejected. Messages name the offending
/// steps and are meant to be returned to the client as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DagError {
    #[error("a workflow needs at least one step")]
    NoSteps,
    #[error("a workflow may have at most {max} steps, this one has {count}")]
    TooManySteps { count: usize, max: usize },
    /// `index` is 0-based; the message counts from 1.
    #[error("step #{} has an empty name", .index + 1)]
    EmptyName { index: usize },
    #[error(
        "step name {name:?} is invalid: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
    )]
    InvalidName { name: String },
    #[error("step name {name:?} is used more than once")]
    DuplicateName { name: String },
    #[error("step {step:?} depends on {dependency:?}, which is not a step of this workflow")]
    UnknownDependency { step: String, dependency: String },
    #[error("step {step:?} lists {dependency:?} more than once in depends_on")]
    DuplicateDependency { step: String, dependency: String },
    #[error("step {step:?} depends on itself")]
    SelfDependency { step: String },
    /// `steps` is the cycle in execution order, starting and ending with the
    /// same step: each step waits for the one before it.
    #[error("dependency cycle: {} (each step waits for the one before it)", .steps.join(" -> "))]
    Cycle { steps: Vec<String> },
}

impl DagError {
    /// Whether the OpenAPI document already refuses such a definition
    /// (`steps` holds 1 to [`MAX_STEPS`] items, each name matches
    /// `^[A-Za-z0-9_-]{1,64}$`): a 400. The rest (repeats, unknown
    /// dependencies, cycles) need the whole graph to see: a 422.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            DagError::NoSteps
                | DagError::TooManySteps { .. }
                | DagError::EmptyName { .. }
                | DagError::InvalidName { .. }
        )
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks `def` and returns its step names in a topological order
/// (every step after all of its dependencies).
///
/// The order is deterministic: Kahn's algorithm with a FIFO queue seeded
/// in definition order, so independent steps keep their definition order
/// and a definition already listed in dependency order comes back unchanged.
///
/// Runs in O(V + E): names are hashed once, each edge is visited a constant
/// number of times, and a cycle is extracted by walking at most V steps.
pub fn validate(def: &WorkflowDef) -> Result<Vec<String>, DagError> {
    let steps = &def.steps;
    if steps.is_empty() {
        return Err(DagError::NoSteps);
    }
    if steps.len() > MAX_STEPS {
        return Err(DagError::TooManySteps {
            count: steps.len(),
            max: MAX_STEPS,
        });
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        if step.name.is_empty() {
            return Err(DagError::EmptyName { index: i });
        }
        if !valid_name(&step.name) {
            return Err(DagError::InvalidName {
                name: step.name.clone(),
            });
        }
        if index.insert(&step.name, i).is_some() {
            return Err(DagError::DuplicateName {
                name: step.name.clone(),
            });
        }
    }

    // deps[i]: indices of the steps i waits for; dependants: the reverse.
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, step) in steps.iter().enumerate() {
        let mut seen = HashSet::with_capacity(step.depends_on.len());
        let mut mine = Vec::with_capacity(step.depends_on.len());
        for dep in &step.depends_on {
            if *dep == step.name {
                return Err(DagError::SelfDependency {
                    step: step.name.clone(),
                });
            }
            let Some(&d) = index.get(dep.as_str()) else {
                return Err(DagError::UnknownDependency {
                    step: step.name.clone(),
                    dependency: dep.clone(),
                });
            };
            if !seen.insert(d) {
                return Err(DagError::DuplicateDependency {
                    step: step.name.clone(),
                    dependency: dep.clone(),
                });
            }
            mine.push(d);
            dependants[d].push(i);
        }
        deps.push(mine);
    }

    // Kahn's algorithm.
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut queue: VecDeque<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(i) = queue.pop_front() {
        order.push(steps[i].name.clone());
        for &j in &dependants[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                queue.push_back(j);
            }
        }
    }
    if order.len() == steps.len() {
        return Ok(order);
    }
    Err(DagError::Cycle {
        steps: find_cycle(steps, &deps, &waiting),
    })
}

/// Extracts one cycle after Kahn's algorithm stalled.
///
/// Every step left with `waiting > 0` still waits for another leftover step
/// (its unfinished dependency is itself a leftover), so walking "waits for"
/// edges from any leftover step never leaves the leftovers and must revisit
/// a step within V moves: the walk from the first revisit is a cycle. It is
/// reported in execution order, starting from its step that comes first in
/// the definition, and closed by repeating that step.
fn find_cycle(steps: &[StepDef], deps: &[Vec<usize>], waiting: &[usize]) -> Vec<String> {
    let stuck = |i: usize| waiting[i] > 0;
    let start = (0..steps.len())
        .find(|&i| stuck(i))
        .expect("Kahn's algorithm stalled, so some step is still waiting");
    let mut position: HashMap<usize, usize> = HashMap::new();
    let mut walk = Vec::new();
    let mut at = start;
    while let std::collections::hash_map::Entry::Vacant(e) = position.entry(at) {
        e.insert(walk.len());
        walk.push(at);
        at = *deps[at]
            .iter()
            .find(|&&d| stuck(d))
            .expect("a stuck step waits for a stuck step");
    }
    // walk[position[at]..] follows "waits for" edges; reverse it into
    // execution order and rotate it to start at its earliest-defined step.
    let mut cycle: Vec<usize> = walk[position[&at]..].iter().rev().copied().collect();
    let first = (0..cycle.len())
        .min_by_key(|&k| cycle[k])
        .expect("a cycle has at least two steps");
    cycle.rotate_left(first);
    cycle.push(cycle[0]);
    cycle.into_iter().map(|i| steps[i].name.clone()).collect()
}

/// Where one step of a running workflow stands, as stored by the scheduler.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started yet (waiting for its dependencies).
    Pending,
    /// A run for this step exists and has not finished.
    Running,
    /// Its run succeeded.
    Succeeded,
    /// Its run failed (after any retries).
    Failed,
    /// Never run, because a dependency failed (without `allow_failure`) or
    /// was itself skipped.
    Skipped,
}

impl StepState {
    /// Whether the step will not change state any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }
}

/// How a finished workflow ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowOutcome {
    /// Every step succeeded, or failed with `allow_failure`.
    Succeeded,
    /// Some step failed without `allow_failure`, or was skipped.
    Failed,
}

/// What the scheduler should do next; see [`advance`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance {
    /// Pending steps whose dependencies are all done — each dependency
    /// succeeded, or failed with `allow_failure` on that dependency. Start
    /// a run for each (in this order, which is definition order).
    pub start: Vec<String>,
    /// Pending steps that can never run: some dependency failed without
    /// `allow_failure`, or was skipped. Mark each `Skipped`.
    pub skip: Vec<String>,
    /// `Some` once no step is `Pending` or `Running` in the given states.
    pub finished: Option<WorkflowOutcome>,
}

/// The scheduler's step function: from the current state of every step,
/// which steps to start, which to skip, and whether the workflow is over.
///
/// * `def` must have passed [`validate`].
/// * A step missing from `states` counts as `Pending`; entries for names
///   that are not steps are ignored.
/// * `finished` is computed from `states` alone, not from `start`/`skip`:
///   the caller applies `start` and `skip`, then calls again. In particular
///   skipping is transitive through repeated calls — when `a` fails in
///   `a -> b -> c`, the first call skips `b`, the next (with `b` Skipped)
///   skips `c`, and the one after reports [`WorkflowOutcome::Failed`].
///   Doing one level per call keeps every decision visible in the stored
///   states, at the cost of a few more calls on a deep failure.
///
/// O(V + E) map lookups.
pub fn advance(def: &WorkflowDef, states: &BTreeMap<String, StepState>) -> Advance {
    let state_of = |name: &str| states.get(name).copied().unwrap_or(StepState::Pending);
    let allow_failure: HashMap<&str, bool> = def
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.allow_failure))
        .collect();

    let mut out = Advance::default();
    let mut active = false;
    let mut failed = false;
    for step in &def.steps {
        match state_of(&step.name) {
            StepState::Pending => {
                active = true;
                let mut blocked = false;
                let mut ready = true;
                for dep in &step.depends_on {
                    match state_of(dep) {
                        StepState::Succeeded => {}
                        StepState::Failed if allow_failure.get(dep.as_str()) == Some(&true) => {}
                        StepState::Failed | StepState::Skipped => blocked = true,
                        StepState::Pending | StepState::Running => ready = false,
                    }
                }
                if blocked {
                    out.skip.push(step.name.clone());
                } else if ready {
                    out.start.push(step.name.clone());
                }
            }
            StepState::Running => active = true,
            StepState::Succeeded => {}
            StepState::Failed => failed |= !step.allow_failure,
            StepState::Skipped => failed = true,
        }
    }
    if !active {
        out.finished = Some(if failed {
            WorkflowOutcome::Failed
        } else {
            WorkflowOutcome::Succeeded
        });
    }
    out
}

/// Each step of `def` (in definition order) with how many steps it waits
/// for and the steps that wait for it: what a workflow run stores so that
/// a step's end moves its successors on without a pass over the whole
/// workflow. Linear in the number of steps and edges.
pub fn step_counts(def: &WorkflowDef) -> Vec<(String, i64, Vec<String>)> {
    let index: HashMap<&str, usize> = def
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut successors: Vec<Vec<String>> = vec![Vec::new(); def.steps.len()];
    for step in &def.steps {
        for dep in &step.depends_on {
            if let Some(&d) = index.get(dep.as_str()) {
                successors[d].push(step.name.clone());
            }
        }
    }
    def.steps
        .iter()
        .zip(successors)
        .map(|(step, successors)| (step.name.clone(), step.depends_on.len() as i64, successors))
        .collect()
}

/// The input bytes of step `step`, given the outputs of the steps that ran.
///
/// This is the contract task authors program against:
///
/// * **No dependencies** → `None`: the step gets the input written in its own
///   run template.
/// * **One dependency** → that step's output, byte for byte. Chains of
///   single-dependency steps are plain pipes: whatever `a` returns, `b`
///   receives.
/// * **Several dependencies** → a JSON object (UTF-8, compact) with one key
///   per dependency name, keys sorted, each value being that dependency's
///   output:
///   * parsed as JSON if it is valid JSON (so `{"rows": 3}`, `42`, `"text"`
///     and `[1,2]` arrive as JSON values, not as strings);
///   * otherwise, if it is valid UTF-8, as a JSON string (`hello` →
///     `"hello"`; an empty output → `""`);
///   * otherwise (binary) as `{"base64": "<standard base64, padded>"}` —
///     a tagged object rather than a bare string, so binary data can never
///     be mistaken for text.
///   * A dependency with no recorded output (it failed, with
///     `allow_failure`, before producing one) is `null`; as the single
///     dependency it gives empty input.
/// * A **map step**'s output, as its dependants see it, is a JSON array
///   with one element per split in split order, each that split's output
///   by the rules above (`[]` for an empty prefix); once the outputs are
///   too large to pass inline, each element is `{"output_key": KEY}`, the
///   output's key in the artifact store ([`map_output`]).
///
///   The template's own input is not included: a step that needs static
///   parameters as well should read them from its template's params.
///
/// Returns `None` also for a `step` that is not in `def`.
pub fn step_input(
    def: &WorkflowDef,
    step: &str,
    outputs: &BTreeMap<String, Vec<u8>>,
) -> Option<Vec<u8>> {
    let step = def.steps.iter().find(|s| s.name == step)?;
    match step.depends_on.as_slice() {
        [] => None,
        [only] => Some(outputs.get(only).cloned().unwrap_or_default()),
        several => {
            let mut names: Vec<&String> = several.iter().collect();
            // Sorted and inserted in order, so the key order is the same
            // whether or not serde_json's `preserve_order` feature is on.
            names.sort();
            names.dedup();
            let mut object = serde_json::Map::with_capacity(names.len());
            for name in names {
                let value = match outputs.get(name) {
                    None => serde_json::Value::Null,
                    Some(bytes) => output_as_json(bytes),
                };
                object.insert(name.clone(), value);
            }
            Some(
                serde_json::to_vec(&serde_json::Value::Object(object))
                    .expect("a JSON value always serializes"),
            )
        }
    }
}

/// One split's output, as the scheduler read it for [`map_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitOutput {
    /// The output itself; `None` if the split's run has none (it failed).
    Inline(Option<Vec<u8>>),
    /// The output's key in the artifact store.
    Stored(String),
}

/// A map step's output, as a step depending on it receives it: a JSON
/// array of its splits' outputs, in split order (see [`step_input`]).
pub fn map_output(outputs: &[SplitOutput]) -> Vec<u8> {
    let values: Vec<serde_json::Value> = outputs
        .iter()
        .map(|output| match output {
            SplitOutput::Inline(None) => serde_json::Value::Null,
            SplitOutput::Inline(Some(bytes)) => output_as_json(bytes),
            SplitOutput::Stored(key) => serde_json::json!({ "output_key": key }),
        })
        .collect();
    serde_json::to_vec(&values).expect("a JSON value always serializes")
}

/// One dependency's output as a JSON value, per [`step_input`]'s rules.
pub(crate) fn output_as_json(bytes: &[u8]) -> serde_json::Value {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return value;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_owned()),
        Err(_) => serde_json::json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(bytes)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    fn step(name: &str, deps: &[&str]) -> StepDef {
        StepDef {
            name: name.to_owned(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            allow_failure: false,
            map: None,
            run: json!({"module": "m", "function": name}),
        }
    }

    #[test]
    fn step_counts_give_waits_and_successors() {
        let def = WorkflowDef {
            steps: vec![
                step("a", &[]),
                step("b", &["a"]),
                step("c", &["a"]),
                step("d", &["b", "c"]),
            ],
        };
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            step_counts(&def),
            vec![
                ("a".to_owned(), 0, names(&["b", "c"])),
                ("b".to_owned(), 1, names(&["d"])),
                ("c".to_owned(), 1, names(&["d"])),
                ("d".to_owned(), 2, names(&[])),
            ]
        );
    }

    fn wf(steps: Vec<StepDef>) -> WorkflowDef {
        WorkflowDef { steps }
    }

    fn states(list: &[(&str, StepState)]) -> BTreeMap<String, StepState> {
        list.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Asserts that `order` lists every step once, each after its deps.
    fn assert_topological(def: &WorkflowDef, order: &[String]) {
        assert_eq!(order.len(), def.steps.len());
        let pos: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        assert_eq!(pos.len(), order.len(), "duplicates in {order:?}");
        for s in &def.steps {
            for d in &s.depends_on {
                assert!(
                    pos[d.as_str()] < pos[s.name.as_str()],
                    "{d} before {}",
                    s.name
                );
            }
        }
    }

    // ---- serde ---------------------------------------------------------

    #[test]
    fn deserializes_with_defaults() {
        let def: WorkflowDef = serde_json::from_value(json!({
            "steps": [
                {"name": "a", "run": {"module": "x"}},
                {"name": "b", "depends_on": ["a"], "allow_failure": true, "run": {}}
            ]
        }))
        .unwrap();
        assert_eq!(def.steps[0].depends_on, Vec::<String>::new());
        assert!(!def.steps[0].allow_failure);
        assert_eq!(def.steps[1].depends_on, names(&["a"]));
        assert!(def.steps[1].allow_failure);
        assert_eq!(def.steps[0].run, json!({"module": "x"}));
        // Round trip.
        let back: WorkflowDef =
            serde_json::from_value(serde_json::to_value(&def).unwrap()).unwrap();
        assert_eq!(back, def);
    }

    #[test]
    fn rejects_unknown_step_fields() {
        let err = serde_json::from_value::<WorkflowDef>(json!({
            "steps": [{"name": "a", "dependsOn": ["b"], "run": {}}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("dependsOn"), "{err}");
        assert!(
            serde_json::from_value::<WorkflowDef>(json!({"steps": [{"name": "a"}]})).is_err(),
            "run is required"
        );
    }

    #[test]
    fn state_and_outcome_serde_is_snake_case() {
        for (state, text) in [
            (StepState::Pending, "pending"),
            (StepState::Running, "running"),
            (StepState::Succeeded, "succeeded"),
            (StepState::Failed, "failed"),
            (StepState::Skipped, "skipped"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(text));
            assert_eq!(
                serde_json::from_value::<StepState>(json!(text)).unwrap(),
                state
            );
        }
        assert_eq!(
            serde_json::to_value(WorkflowOutcome::Succeeded).unwrap(),
            json!("succeeded")
        );
        assert_eq!(
            serde_json::to_value(WorkflowOutcome::Failed).unwrap(),
            json!("failed")
        );
        assert!(StepState::Skipped.is_terminal() && !StepState::Running.is_terminal());
    }

    #[test]
    fn schemas_are_generated() {
        use utoipa::PartialSchema as _;
        for schema in [
            WorkflowDef::schema(),
            StepDef::schema(),
            StepState::schema(),
            WorkflowOutcome::schema(),
        ] {
            let text = serde_json::to_string(&schema).unwrap();
            assert!(!text.is_empty());
        }
        let step = serde_json::to_string(&StepDef::schema()).unwrap();
        assert!(
            step.contains("depends_on") && step.contains("allow_failure"),
            "{step}"
        );
    }

    // ---- validate: accepted --------------------------------------------

    #[test]
    fn single_step() {
        assert_eq!(
            validate(&wf(vec![step("only", &[])])).unwrap(),
            names(&["only"])
        );
    }

    #[test]
    fn order_respects_dependencies_and_definition_order() {
        // Defined out of order: c depends on a and b, b on a.
        let def = wf(vec![
            step("c", &["a", "b"]),
            step("b", &["a"]),
            step("a", &[]),
            step("z", &[]),
        ]);
        let order = validate(&def).unwrap();
        assert_topological(&def, &order);
        assert_eq!(order, names(&["a", "z", "b", "c"]));
        // Already in dependency order: unchanged.
        let def = wf(vec![step("x", &[]), step("y", &["x"]), step("z", &["x"])]);
        assert_eq!(validate(&def).unwrap(), names(&["x", "y", "z"]));
    }

    #[test]
    fn diamond() {
        let def = wf(vec![
            step("extract", &[]),
            step("clean", &["extract"]),
            step("stats", &["extract"]),
            step("report", &["clean", "stats"]),
        ]);
        let order = validate(&def).unwrap();
        assert_topological(&def, &order);
        assert_eq!(order.first().unwrap(), "extract");
        assert_eq!(order.last().unwrap(), "report");
    }

    #[test]
    fn accepts_names_at_the_limits() {
        let long = "a".repeat(64);
        let def = wf(vec![
            step(&long, &[]),
            step("A-z_0-9", &[&long]),
            step("-", &[]),
            step("_", &[]),
        ]);
        assert!(validate(&def).is_ok());
    }

    // ---- validate: rejected --------------------------------------------

    #[test]
    fn rejects_no_steps() {
        let err = validate(&wf(vec![])).unwrap_err();
        assert_eq!(err, DagError::NoSteps);
        assert_eq!(err.to_string(), "a workflow needs at least one step");
    }

    #[test]
    fn rejects_too_many_steps() {
        let steps = (0..=MAX_STEPS)
            .map(|i| step(&format!("s{i}"), &[]))
            .collect();
        let err = validate(&wf(steps)).unwrap_err();
        assert_eq!(
            err,
            DagError::TooManySteps {
                count: 10_001,
                max: 10_000
            }
        );
        assert!(err.to_string().contains("at most 10000 steps"), "{err}");
        // Exactly the limit is fine.
        let steps = (0..MAX_STEPS)
            .map(|i| step(&format!("s{i}"), &[]))
            .collect();
        assert_eq!(validate(&wf(steps)).unwrap().len(), MAX_STEPS);
    }

    #[test]
    fn rejects_empty_and_invalid_names() {
        let err = validate(&wf(vec![step("a", &[]), step("", &[])])).unwrap_err();
        assert_eq!(err, DagError::EmptyName { index: 1 });
        assert_eq!(err.to_string(), "step #2 has an empty name");

        for bad in [
            "has space",
            "dot.ted",
            "slash/",
            "ünï",
            "a\n",
            &"a".repeat(65),
            "{{ds}}",
        ] {
            let err = validate(&wf(vec![step(bad, &[])])).unwrap_err();
            assert_eq!(
                err,
                DagError::InvalidName {
                    name: bad.to_owned()
                }
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{bad:?}")) && msg.contains("1 to 64"),
                "{msg}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_names() {
        let err = validate(&wf(vec![step("a", &[]), step("b", &[]), step("a", &[])])).unwrap_err();
        assert_eq!(err, DagError::DuplicateName { name: "a".into() });
        assert_eq!(err.to_string(), "step name \"a\" is used more than once");
    }

    #[test]
    fn rejects_unknown_dependency_naming_both() {
        let err = validate(&wf(vec![step("a", &[]), step("b", &["a", "ghost"])])).unwrap_err();
        assert_eq!(
            err,
            DagError::UnknownDependency {
                step: "b".into(),
                dependency: "ghost".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "step \"b\" depends on \"ghost\", which is not a step of this workflow"
        );
    }

    #[test]
    fn rejects_self_and_duplicate_dependencies() {
        let err = validate(&wf(vec![step("a", &["a"])])).unwrap_err();
        assert_eq!(err, DagError::SelfDependency { step: "a".into() });
        assert_eq!(err.to_string(), "step \"a\" depends on itself");

        let err = validate(&wf(vec![step("a", &[]), step("b", &["a", "a"])])).unwrap_err();
        assert_eq!(
            err,
            DagError::DuplicateDependency {
                step: "b".into(),
                dependency: "a".into()
            }
        );
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn rejects_cycles_naming_the_steps_on_the_cycle() {
        // a waits for c, b for a, c for b: a -> b -> c -> a.
        let def = wf(vec![
            step("a", &["c"]),
            step("b", &["a"]),
            step("c", &["b"]),
        ]);
        let err = validate(&def).unwrap_err();
        assert_eq!(
            err,
            DagError::Cycle {
                steps: names(&["a", "b", "c", "a"])
            }
        );
        assert_eq!(
            err.to_string(),
            "dependency cycle: a -> b -> c -> a (each step waits for the one before it)"
        );

        // Two-step cycle.
        let def = wf(vec![step("x", &["y"]), step("y", &["x"])]);
        assert_eq!(
            validate(&def).unwrap_err(),
            DagError::Cycle {
                steps: names(&["x", "y", "x"])
            }
        );
    }

    #[test]
    fn cycle_report_excludes_steps_merely_downstream_or_upstream() {
        // root -> p -> q -> r -> p, and r -> tail, tail2 depends on tail.
        let def = wf(vec![
            step("tail2", &["tail"]),
            step("tail", &["r"]),
            step("root", &[]),
            step("r", &["q"]),
            step("q", &["p"]),
            step("p", &["root", "r"]),
        ]);
        match validate(&def).unwrap_err() {
            DagError::Cycle { steps } => {
                // Starts at the cycle's earliest-defined step (r).
                assert_eq!(steps, names(&["r", "p", "q", "r"]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_reported_cycle_is_a_real_cycle() {
        // A ring of 50 steps with chords and a tail: the reported cycle must
        // consist of real edges, in execution order.
        let n = 50;
        let mut steps: Vec<StepDef> = (0..n)
            .map(|i| {
                let prev = format!("s{}", (i + n - 1) % n);
                let mut deps = vec![prev];
                if i % 7 == 3 {
                    deps.push(format!("s{}", (i + n - 3) % n));
                }
                StepDef {
                    depends_on: deps,
                    ..step(&format!("s{i}"), &[])
                }
            })
            .collect();
        steps.push(step("after", &["s10"]));
        let def = wf(steps);
        let DagError::Cycle { steps: cycle } = validate(&def).unwrap_err() else {
            panic!("expected a cycle");
        };
        assert_eq!(cycle.first(), cycle.last());
        let by_name: HashMap<&str, &StepDef> =
            def.steps.iter().map(|s| (s.name.as_str(), s)).collect();
        for pair in cycle.windows(2) {
            assert!(
                by_name[pair[1].as_str()].depends_on.contains(&pair[0]),
                "{} does not wait for {}",
                pair[1],
                pair[0]
            );
        }
        let distinct: HashSet<&String> = cycle[..cycle.len() - 1].iter().collect();
        assert_eq!(
            distinct.len(),
            cycle.len() - 1,
            "not a simple cycle: {cycle:?}"
        );
    }

    // ---- validate: scale -----------------------------------------------

    #[test]
    fn long_chain_validates_fast() {
        let n = 1_000;
        let def = wf((0..n)
            .map(|i| {
                if i == 0 {
                    step("s0", &[])
                } else {
                    step(&format!("s{i}"), &[&format!("s{}", i - 1)])
                }
            })
            .rev() // worst case for a naive scan: dependants first
            .collect());
        let start = Instant::now();
        let order = validate(&def).unwrap();
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
        assert_eq!(order.first().unwrap(), "s0");
        assert_eq!(order.last().unwrap(), &format!("s{}", n - 1));
        assert_topological(&def, &order);
    }

    #[test]
    fn wide_fan_out_fan_in_validates_fast() {
        let n = 1_000;
        let mut steps = vec![step("source", &[])];
        steps.extend((0..n).map(|i| step(&format!("w{i}"), &["source"])));
        let all: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        steps.push(StepDef {
            depends_on: all,
            ..step("sink", &[])
        });
        let def = wf(steps);
        let start = Instant::now();
        let order = validate(&def).unwrap();
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
        assert_eq!(order.len(), n + 2);
        assert_eq!(order[0], "source");
        assert_eq!(order[n + 1], "sink");
        assert_eq!(order[1], "w0");
    }

    #[test]
    fn large_cycle_is_found_fast() {
        let n = 10_000;
        let def = wf((0..n)
            .map(|i| step(&format!("s{i}"), &[&format!("s{}", (i + 1) % n)]))
            .collect());
        let start = Instant::now();
        let DagError::Cycle { steps } = validate(&def).unwrap_err() else {
            panic!("expected a cycle");
        };
        assert!(start.elapsed().as_millis() < 1_000, "{:?}", start.elapsed());
        assert_eq!(steps.len(), n + 1);
        assert_eq!(steps[0], "s0");
        assert_eq!(steps[1], format!("s{}", n - 1));
    }

    #[test]
    fn dense_dag_at_the_step_limit_validates_fast() {
        // 10,000 steps in 100 layers of 100, each step depending on all of
        // the previous layer: a million edges.
        let (layers, width) = (100, 100);
        let mut steps = Vec::with_capacity(layers * width);
        for l in 0..layers {
            for w in 0..width {
                let deps = if l == 0 {
                    Vec::new()
                } else {
                    (0..width).map(|p| format!("l{}_{p}", l - 1)).collect()
                };
                steps.push(StepDef {
                    depends_on: deps,
                    ..step(&format!("l{l}_{w}"), &[])
                });
            }
        }
        let def = wf(steps);
        let start = Instant::now();
        let order = validate(&def).unwrap();
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        assert_eq!(order.len(), layers * width);
    }

    // ---- advance -------------------------------------------------------

    use StepState::{Failed, Pending, Running, Skipped, Succeeded};

    fn chain() -> WorkflowDef {
        wf(vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])])
    }

    /// Drives `def` to completion the way the scheduler would, with
    /// `result` deciding each started step's end state. Returns the final
    /// states, the outcome and the number of `advance` calls.
    fn drive(
        def: &WorkflowDef,
        result: impl Fn(&str) -> StepState,
    ) -> (BTreeMap<String, StepState>, WorkflowOutcome, usize) {
        let mut st = BTreeMap::new();
        for calls in 1..1_000 {
            let adv = advance(def, &st);
            if let Some(outcome) = adv.finished {
                assert!(adv.start.is_empty() && adv.skip.is_empty());
                return (st, outcome, calls);
            }
            for s in adv.skip {
                st.insert(s, Skipped);
            }
            for s in adv.start {
                let end = result(&s);
                st.insert(s, end);
            }
        }
        panic!("workflow did not finish");
    }

    #[test]
    fn fresh_workflow_starts_roots() {
        let def = wf(vec![step("b", &["a"]), step("a", &[]), step("c", &[])]);
        let adv = advance(&def, &BTreeMap::new());
        assert_eq!(adv.start, names(&["a", "c"]));
        assert!(adv.skip.is_empty());
        assert_eq!(adv.finished, None);
    }

    #[test]
    fn waits_for_running_and_pending_dependencies() {
        let def = wf(vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])]);
        let adv = advance(&def, &states(&[("a", Succeeded), ("b", Running)]));
        assert_eq!(adv, Advance::default());
        let adv = advance(&def, &states(&[("a", Succeeded), ("b", Succeeded)]));
        assert_eq!(adv.start, names(&["c"]));
        assert_eq!(adv.finished, None);
        // Running steps are never restarted.
        let adv = advance(
            &def,
            &states(&[("a", Succeeded), ("b", Succeeded), ("c", Running)]),
        );
        assert_eq!(adv, Advance::default());
    }

    #[test]
    fn chain_succeeds() {
        let def = chain();
        let adv = advance(&def, &states(&[("a", Succeeded)]));
        assert_eq!(adv.start, names(&["b"]));
        let adv = advance(
            &def,
            &states(&[("a", Succeeded), ("b", Succeeded), ("c", Succeeded)]),
        );
        assert_eq!(adv.finished, Some(WorkflowOutcome::Succeeded));
        assert!(adv.start.is_empty() && adv.skip.is_empty());
        let (_, outcome, _) = drive(&def, |_| Succeeded);
        assert_eq!(outcome, WorkflowOutcome::Succeeded);
    }

    #[test]
    fn failure_skips_transitively_through_repeated_calls() {
        let def = chain();
        let mut st = states(&[("a", Failed)]);
        let adv = advance(&def, &st);
        assert_eq!(adv.skip, names(&["b"]));
        assert!(adv.start.is_empty());
        assert_eq!(adv.finished, None, "c is still pending");

        st.insert("b".into(), Skipped);
        let adv = advance(&def, &st);
        assert_eq!(adv.skip, names(&["c"]));
        assert_eq!(adv.finished, None);

        st.insert("c".into(), Skipped);
        let adv = advance(&def, &st);
        assert!(adv.start.is_empty() && adv.skip.is_empty());
        assert_eq!(adv.finished, Some(WorkflowOutcome::Failed));

        let (st, outcome, _) = drive(&def, |s| if s == "a" { Failed } else { Succeeded });
        assert_eq!(outcome, WorkflowOutcome::Failed);
        assert_eq!(st, states(&[("a", Failed), ("b", Skipped), ("c", Skipped)]));
    }

    #[test]
    fn allow_failure_lets_dependants_run() {
        let mut def = chain();
        def.steps[0].allow_failure = true;
        let adv = advance(&def, &states(&[("a", Failed)]));
        assert_eq!(adv.start, names(&["b"]));
        assert!(adv.skip.is_empty());
        let (st, outcome, _) = drive(&def, |s| if s == "a" { Failed } else { Succeeded });
        assert_eq!(
            st,
            states(&[("a", Failed), ("b", Succeeded), ("c", Succeeded)])
        );
        assert_eq!(outcome, WorkflowOutcome::Succeeded);
    }

    #[test]
    fn allow_failure_is_a_property_of_the_failing_step() {
        // b.allow_failure does not help when a (its dependency) fails.
        let mut def = chain();
        def.steps[1].allow_failure = true;
        let (st, outcome, _) = drive(&def, |s| if s == "a" { Failed } else { Succeeded });
        assert_eq!(st, states(&[("a", Failed), ("b", Skipped), ("c", Skipped)]));
        assert_eq!(outcome, WorkflowOutcome::Failed);
        // But b failing is tolerated, and c runs.
        let (st, outcome, _) = drive(&def, |s| if s == "b" { Failed } else { Succeeded });
        assert_eq!(
            st,
            states(&[("a", Succeeded), ("b", Failed), ("c", Succeeded)])
        );
        assert_eq!(outcome, WorkflowOutcome::Succeeded);
    }

    #[test]
    fn a_failed_branch_does_not_stop_independent_branches() {
        // a -> b, c -> d; a fails.
        let def = wf(vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &[]),
            step("d", &["c"]),
        ]);
        let adv = advance(&def, &states(&[("a", Failed), ("c", Succeeded)]));
        assert_eq!(adv.skip, names(&["b"]));
        assert_eq!(adv.start, names(&["d"]));
        assert_eq!(adv.finished, None);
        let (st, outcome, _) = drive(&def, |s| if s == "a" { Failed } else { Succeeded });
        assert_eq!(st["d"], Succeeded);
        assert_eq!(st["b"], Skipped);
        assert_eq!(outcome, WorkflowOutcome::Failed);
    }

    #[test]
    fn fan_in_is_skipped_if_any_dependency_is_blocked_even_while_others_run() {
        let def = wf(vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])]);
        let adv = advance(&def, &states(&[("a", Failed), ("b", Running)]));
        assert_eq!(adv.skip, names(&["c"]));
        assert_eq!(adv.finished, None, "b is still running");
        let adv = advance(
            &def,
            &states(&[("a", Failed), ("b", Running), ("c", Skipped)]),
        );
        assert_eq!(adv.finished, None);
        let adv = advance(
            &def,
            &states(&[("a", Failed), ("b", Succeeded), ("c", Skipped)]),
        );
        assert_eq!(adv.finished, Some(WorkflowOutcome::Failed));
    }

    #[test]
    fn finished_is_computed_from_given_states_only() {
        // Only b pending and startable: not finished, even though starting
        // it is all that is left.
        let def = wf(vec![step("a", &[]), step("b", &["a"])]);
        let adv = advance(&def, &states(&[("a", Succeeded)]));
        assert_eq!(adv.start, names(&["b"]));
        assert_eq!(adv.finished, None);
        // A missing state counts as pending.
        let adv = advance(&def, &states(&[("a", Succeeded), ("b", Pending)]));
        assert_eq!(adv.start, names(&["b"]));
    }

    #[test]
    fn outcome_rules() {
        let mut def = wf(vec![step("a", &[]), step("b", &[])]);
        let done = |a, b| advance(&def, &states(&[("a", a), ("b", b)])).finished;
        assert_eq!(done(Succeeded, Succeeded), Some(WorkflowOutcome::Succeeded));
        assert_eq!(done(Succeeded, Failed), Some(WorkflowOutcome::Failed));
        assert_eq!(done(Succeeded, Skipped), Some(WorkflowOutcome::Failed));
        assert_eq!(done(Succeeded, Running), None);
        assert_eq!(done(Pending, Succeeded), None);
        def.steps[1].allow_failure = true;
        let done = |a, b| advance(&def, &states(&[("a", a), ("b", b)])).finished;
        assert_eq!(done(Succeeded, Failed), Some(WorkflowOutcome::Succeeded));
        // Skipped still fails the workflow, allow_failure or not.
        assert_eq!(done(Succeeded, Skipped), Some(WorkflowOutcome::Failed));
    }

    #[test]
    fn unknown_names_in_states_are_ignored() {
        let def = wf(vec![step("a", &[])]);
        let adv = advance(&def, &states(&[("a", Succeeded), ("ghost", Failed)]));
        assert_eq!(adv.finished, Some(WorkflowOutcome::Succeeded));
    }

    #[test]
    fn diamond_with_one_failing_branch_drives_to_failure() {
        let def = wf(vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("d", &["b", "c"]),
            step("e", &["d"]),
        ]);
        let (st, outcome, calls) = drive(&def, |s| if s == "c" { Failed } else { Succeeded });
        assert_eq!(
            st,
            states(&[
                ("a", Succeeded),
                ("b", Succeeded),
                ("c", Failed),
                ("d", Skipped),
                ("e", Skipped)
            ])
        );
        assert_eq!(outcome, WorkflowOutcome::Failed);
        assert_eq!(calls, 5);
    }

    #[test]
    fn advance_on_wide_workflow_is_fast() {
        let n = 1_000;
        let mut steps = vec![step("source", &[])];
        steps.extend((0..n).map(|i| step(&format!("w{i}"), &["source"])));
        steps.push(StepDef {
            depends_on: (0..n).map(|i| format!("w{i}")).collect(),
            ..step("sink", &[])
        });
        let def = wf(steps);
        let start = Instant::now();
        let adv = advance(&def, &states(&[("source", Succeeded)]));
        assert_eq!(adv.start.len(), n);
        let (_, outcome, calls) = drive(&def, |_| Succeeded);
        assert_eq!((outcome, calls), (WorkflowOutcome::Succeeded, 4));
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
    }

    // ---- step_input ----------------------------------------------------

    fn outputs(list: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(n, b)| ((*n).to_owned(), b.to_vec()))
            .collect()
    }

    #[test]
    fn no_dependencies_means_template_input() {
        let def = chain();
        assert_eq!(step_input(&def, "a", &outputs(&[("x", b"1")])), None);
        assert_eq!(step_input(&def, "nope", &BTreeMap::new()), None);
    }

    #[test]
    fn single_dependency_passes_bytes_verbatim() {
        let def = chain();
        let binary: &[u8] = &[0, 159, 146, 150, 255];
        for bytes in [b"{\"rows\": 3}".as_slice(), b"plain text", binary, b""] {
            assert_eq!(
                step_input(&def, "b", &outputs(&[("a", bytes)])),
                Some(bytes.to_vec())
            );
        }
        // A dependency with no output gives empty input.
        assert_eq!(step_input(&def, "b", &BTreeMap::new()), Some(Vec::new()));
    }

    #[test]
    fn several_dependencies_make_a_json_object() {
        let def = wf(vec![
            step("json", &[]),
            step("text", &[]),
            step("bin", &[]),
            step("empty", &[]),
            step("missing", &[]),
            step("number", &[]),
            step(
                "join",
                &["text", "json", "bin", "empty", "missing", "number"],
            ),
        ]);
        let out = outputs(&[
            ("json", b" {\"rows\": 3, \"ok\": true}\n"),
            ("text", b"hello \xc3\xa9 {"),
            ("bin", &[0xff, 0x00, 0xfe]),
            ("empty", b""),
            ("number", b"42"),
        ]);
        let input = step_input(&def, "join", &out).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&input).unwrap();
        assert_eq!(
            value,
            json!({
                "json": {"rows": 3, "ok": true},
                "text": "hello é {",
                "bin": {"base64": "/wD+"},
                "empty": "",
                "missing": null,
                "number": 42
            })
        );
        // Compact and keys sorted.
        let text = String::from_utf8(input).unwrap();
        assert!(
            text.starts_with("{\"bin\":{\"base64\":\"/wD+\"},\"empty\":\"\",\"json\":"),
            "{text}"
        );
    }

    #[test]
    fn map_output_is_an_array_in_split_order() {
        assert_eq!(map_output(&[]), b"[]");
        let out = map_output(&[
            SplitOutput::Inline(Some(b"{\"words\": 3}".to_vec())),
            SplitOutput::Inline(Some(b"text".to_vec())),
            SplitOutput::Inline(None),
            SplitOutput::Stored("outputs/r1".into()),
        ]);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            json!([{"words": 3}, "text", null, {"output_key": "outputs/r1"}])
        );
    }

    #[test]
    fn json_string_output_is_not_double_encoded() {
        let def = wf(vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])]);
        let out = outputs(&[("a", b"\"quoted\""), ("b", b"[1,2]")]);
        let value: serde_json::Value =
            serde_json::from_slice(&step_input(&def, "c", &out).unwrap()).unwrap();
        assert_eq!(value, json!({"a": "quoted", "b": [1, 2]}));
    }
}
