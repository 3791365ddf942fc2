//! No request makes a service panic or answer INTERNAL or UNKNOWN, and every service is
//! still SERVING afterwards.
//!
//! One mesh; then, for a time budget, random requests for every public RPC (every method
//! of every `popug.*` service in the descriptor set), built field by field from the
//! descriptors ([`values`]): mostly valid enough to reach the database but for one
//! hostile field (edge values, NUL and other control characters, huge or odd text, days
//! out of range, malformed ids), sometimes all valid or all anything. Each goes through
//! the gateway with every role's token (and sometimes none, or a forged one; sometimes
//! with an `idempotency-key`, odd or reused), and straight to the service that serves the
//! RPC; an OK answer must decode as the RPC's response. Destructive RPCs run too; the
//! callers' own accounts are spared, since any change of an account revokes its tokens (a
//! DeleteAccount, UpdateAccount or LogoutEverywhere naming one goes to a throwaway user
//! instead).
//!
//! Handlers run on tokio tasks, so a panic does not fail the test by itself (its caller
//! sees CANCELLED, or UNAVAILABLE through the gateway): a panic hook counts them. A
//! failing request is shrunk to a minimal one, the run goes on to find others, and every
//! distinct failure is reported at the end with the seed. Events are applied and every
//! service must answer health SERVING before the panics are counted.
//!
//! `POPUG_FUZZ_SEED` replays a run's choices (the ids behind them are new each run);
//! `POPUG_FUZZ_SECS` changes the budget (45 s, from the mesh's start; the callers' tokens
//! last 5 minutes).

#![allow(clippy::unwrap_used)]

mod setup;
mod values;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use popug_mesh::Mesh;
use popug_mesh::call::raw_call;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRng, TestRunner};
use prost::Message;
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use setup::{Caller, Rpc};
use values::show;

/// A call not answered by then counts as a failure (the gateway's own deadline is 5 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Cases sent at once (each to up to ten targets at once).
const LANES: usize = 4;
/// How long one failure may be shrunk.
const SHRINK_TIME: Duration = Duration::from_secs(5);

/// Every panic of the process, as the hook saw it.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn panics() -> Vec<String> {
    PANICS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Counts every panic; the usual report (with its backtrace) only for the first one at
/// each place.
fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        let panic = format!("{info} (thread {thread})");
        let mut panics = PANICS.lock().unwrap_or_else(PoisonError::into_inner);
        let first = !panics.iter().any(|p| panic_key(p) == panic_key(&panic));
        panics.push(panic);
        drop(panics);
        if first {
            previous(info);
        }
    }));
}

/// `POPUG_FUZZ_SEED`, or a random one.
fn seed() -> u64 {
    match std::env::var("POPUG_FUZZ_SEED") {
        Ok(seed) => seed.trim().parse().expect("POPUG_FUZZ_SEED must be a u64"),
        Err(_) => Uuid::new_v4().as_u64_pair().0,
    }
}

fn runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// One call of a case: through which hop, as whom.
#[derive(Clone, Copy)]
struct Target<'a> {
    hop: &'static str,
    channel: &'a Channel,
    role: &'static str,
    token: Option<&'a str>,
}

/// Something wrong a call (or the process) showed.
struct Found {
    /// What makes two failures the same: RPC and code, or the panic's location.
    key: String,
    what: String,
}

/// A distinct failure: the first request that showed it and the smallest one found.
struct Failure {
    what: String,
    request: String,
    minimal: String,
    steps: usize,
    times: usize,
}

/// The run's account: calls sent, answers per RPC, failures.
#[derive(Default)]
struct Fuzz {
    cases: usize,
    sent: usize,
    answers: BTreeMap<String, BTreeMap<String, usize>>,
    /// Time spent on each RPC's cases (all calls of a case at once).
    spent: BTreeMap<String, Duration>,
    failures: BTreeMap<String, Failure>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_makes_a_service_panic_or_answer_internal() {
    count_panics();
    let seed = seed();
    println!("fuzz seed {seed} (replay with POPUG_FUZZ_SEED={seed})");
    let budget = std::env::var("POPUG_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(45), Duration::from_secs);
    let started = Instant::now();
    let deadline = started + budget;
    let mesh = Mesh::everything().await;
    let f = setup::fixture(&mesh).await;
    let rpcs = setup::rpcs(&mesh, &f.known, &f.spared, &f.victims);
    println!(
        "fuzz: {} RPCs, set up in {:.1} s",
        rpcs.len(),
        started.elapsed().as_secs_f64()
    );

    let mut runner = runner(seed);
    let mut fuzz = Fuzz::default();
    let gateway = &mesh.gateway().channel;
    while Instant::now() < deadline {
        let cases = (0..LANES)
            .map(|_| Case::new(&mut runner, &rpcs, &f.callers, &f.outsiders, gateway))
            .collect();
        fuzz.batch(cases, deadline).await;
    }
    let fuzzed = started.elapsed();

    // Events the requests caused are applied before the panics are counted.
    popug_testkit::eventually(Duration::from_secs(15), "event consumers drained", || {
        setup::drained(&mesh)
    })
    .await;
    let mut channels = vec![("gateway", gateway), ("account", &mesh.account)];
    channels.push(("taskkeeper", &mesh.taskkeeper().channel));
    channels.push(("accounting", &mesh.accounting().channel));
    let mut not_serving = Vec::new();
    for (name, channel) in channels {
        let status = setup::serving(channel).await;
        if status != Ok(ServingStatus::Serving as i32) {
            not_serving.push(format!("{name}: {status:?}"));
        }
    }

    fuzz.report(seed, fuzzed, started.elapsed());
    let dead = setup::dead_letters(&mesh).await;
    if !dead.is_empty() {
        println!("fuzz: {} dead letters (not a failure):", dead.len());
        for letter in dead.iter().take(10) {
            println!("  {letter}");
        }
    }
    // Every panic, wherever it happened (an event consumer's too).
    let panics = panics();
    let mut places: BTreeMap<String, usize> = BTreeMap::new();
    for panic in &panics {
        *places.entry(panic_key(panic)).or_default() += 1;
    }
    for (place, n) in &places {
        println!("fuzz: {n} panics {place}");
    }
    assert!(
        fuzz.failures.is_empty() && panics.is_empty() && not_serving.is_empty(),
        "{} distinct failures, {} panics, not serving: {not_serving:?} (seed {seed}; see above)",
        fuzz.failures.len(),
        panics.len(),
    );
}

/// A generated request and where it goes.
struct Case<'a> {
    rpc: &'a Rpc,
    targets: Vec<Target<'a>>,
    tree: Box<dyn ValueTree<Value = DynamicMessage>>,
    request: DynamicMessage,
    /// The `idempotency-key` metadata sent with it, if any.
    key: Option<String>,
    /// Whether the tree was shrunk already (it then holds another request).
    shrunk: bool,
}

impl<'a> Case<'a> {
    /// A random RPC, a request for it, every role's caller (and one time in five an
    /// outsider: no token or a forged one) at every hop.
    fn new(
        runner: &mut TestRunner,
        rpcs: &'a [Rpc],
        callers: &'a [Caller],
        outsiders: &'a [Caller],
        gateway: &'a Channel,
    ) -> Case<'a> {
        let rpc = &rpcs[(0..rpcs.len()).new_tree(runner).unwrap().current()];
        let outsider = proptest::option::weighted(0.2, 0..outsiders.len())
            .new_tree(runner)
            .unwrap()
            .current()
            .map(|i| &outsiders[i]);
        let hops = [
            ("gateway", Some(gateway)),
            ("service", rpc.service.as_ref()),
        ];
        let targets = hops
            .into_iter()
            .filter_map(|(hop, channel)| Some((hop, channel?)))
            .flat_map(|(hop, channel)| {
                callers
                    .iter()
                    .chain(outsider)
                    .map(move |(role, token)| Target {
                        hop,
                        channel,
                        role,
                        token: token.as_deref(),
                    })
            })
            .collect();
        let tree = rpc.requests.new_tree(runner).unwrap();
        // Some keys recur across cases: the same key with another request.
        let key = proptest::option::weighted(
            0.2,
            proptest::prop_oneof![
                proptest::sample::select(vec!["k1", "k2", "", " ", "*"]).prop_map(str::to_owned),
                proptest::string::string_regex("[ -~]{1,140}").unwrap(),
            ],
        );
        Case {
            rpc,
            targets,
            request: tree.current(),
            key: key.new_tree(runner).unwrap().current(),
            tree,
            shrunk: false,
        }
    }
}

/// What one call answered, or that it did not within [`CALL_TIMEOUT`].
type Answer = Result<Result<Bytes, tonic::Status>, tokio::time::error::Elapsed>;

/// Sends `request` (with `key` as its `idempotency-key`) to every target at once.
async fn send(
    path: &str,
    targets: &[Target<'_>],
    request: &DynamicMessage,
    key: Option<&str>,
) -> Vec<Answer> {
    let body = Bytes::from(request.encode_to_vec());
    let calls = targets
        .iter()
        .map(|t| tokio::time::timeout(CALL_TIMEOUT, call(t, path, key, body.clone())));
    futures::future::join_all(calls).await
}

/// [`popug_mesh::call::raw_call`] with an `idempotency-key`.
async fn call(
    target: &Target<'_>,
    path: &str,
    key: Option<&str>,
    body: Bytes,
) -> Result<Bytes, tonic::Status> {
    let Some(key) = key else {
        return raw_call(target.channel, path, target.token, body).await;
    };
    let mut grpc = tonic::client::Grpc::new(target.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = match target.token {
        Some(token) => popug_mesh::with_token(token, body),
        None => tonic::Request::new(body),
    };
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(request, path, popug_mesh::call::RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// The first line of a panic report: where it happened.
fn panic_key(panic: &str) -> String {
    panic.lines().next().unwrap_or_default().to_owned()
}

impl Fuzz {
    /// Sends a few cases at once; a failure not seen before is tied to its case (a
    /// panic: the case that panics again alone) and shrunk.
    async fn batch(&mut self, mut cases: Vec<Case<'_>>, deadline: Instant) {
        let before = panics().len();
        let sends = cases.iter().map(|case| async {
            let start = Instant::now();
            let key = case.key.as_deref();
            let answers = send(&case.rpc.path, &case.targets, &case.request, key).await;
            (answers, start.elapsed())
        });
        let results = futures::future::join_all(sends).await;
        let panicked = panics().split_off(before);
        let mut suspects = Vec::new();
        for (i, (case, (answers, spent))) in cases.iter().zip(results).enumerate() {
            self.cases += 1;
            *self.spent.entry(case.rpc.path.clone()).or_default() += spent;
            for (found, culprit) in self.judge(case.rpc, &case.targets, answers, true) {
                suspects.push((i, found, culprit));
            }
        }
        for panic in panicked {
            let key = panic_key(&panic);
            if let Some(failure) = self.failures.get_mut(&key) {
                failure.times += 1;
                continue;
            }
            let mut culprit = (cases.len() == 1).then_some(0);
            for (i, case) in cases.iter().enumerate() {
                if culprit.is_some() {
                    break;
                }
                let again = self
                    .probe(case.rpc, &case.targets, &case.request, case.key.as_deref())
                    .await;
                if again.iter().any(|(f, _)| f.key == key) {
                    culprit = Some(i);
                }
            }
            let found = Found { key, what: panic };
            match culprit {
                Some(i) => suspects.push((i, found, None)),
                None => {
                    let requests: Vec<String> = cases
                        .iter()
                        .map(|c| format!("{} {}", c.rpc.path, show(&c.request)))
                        .collect();
                    self.record(found, requests.join("; "), "not reproduced".into(), 0);
                }
            }
        }
        for (i, found, culprit) in suspects {
            self.note(&mut cases[i], found, culprit, deadline).await;
        }
    }

    /// Counts a failure seen before; shrinks and records a new one.
    async fn note(
        &mut self,
        case: &mut Case<'_>,
        found: Found,
        culprit: Option<usize>,
        deadline: Instant,
    ) {
        if let Some(failure) = self.failures.get_mut(&found.key) {
            failure.times += 1;
            return;
        }
        match found.what.strip_prefix(&found.key) {
            Some(rest) => println!("fuzz: new failure: {}{rest}", found.key),
            None => println!("fuzz: new failure: {}: {}", found.key, found.what),
        }
        let mut request = format!("{} {}", case.rpc.path, show(&case.request));
        if let Some(key) = &case.key {
            request = format!("{request} with idempotency-key {key:?}");
        }
        if case.shrunk {
            self.record(found, request, "-".into(), 0);
            return;
        }
        case.shrunk = true;
        // Shrunk against the call that failed (every call of the case for a panic).
        let culprits = match culprit {
            Some(i) => vec![case.targets[i]],
            None => case.targets.clone(),
        };
        let now = Instant::now();
        let stop = (now + SHRINK_TIME).min(deadline.max(now + Duration::from_secs(1)));
        let (minimal, steps) = self
            .shrink(
                case.rpc,
                &culprits,
                &mut *case.tree,
                case.key.as_deref(),
                &found.key,
                stop,
            )
            .await;
        self.record(found, request, show(&minimal), steps);
    }

    fn record(&mut self, found: Found, request: String, minimal: String, steps: usize) {
        let failure = Failure {
            what: found.what,
            request,
            minimal,
            steps,
            times: 1,
        };
        self.failures.insert(found.key, failure);
    }

    /// What went wrong in `answers` (INTERNAL, UNKNOWN, no answer, an answer that is no
    /// response message), with the index of the target that answered it; counted per RPC
    /// and code when `count` (a composed answer with parts missing apart).
    fn judge(
        &mut self,
        rpc: &Rpc,
        targets: &[Target<'_>],
        answers: Vec<Answer>,
        count: bool,
    ) -> Vec<(Found, Option<usize>)> {
        self.sent += answers.len();
        let path = &rpc.path;
        let mut found = Vec::new();
        for (i, (target, answer)) in targets.iter().zip(answers).enumerate() {
            let (code, bad) = match answer {
                Ok(Ok(bytes)) => match DynamicMessage::decode(rpc.output.clone(), bytes) {
                    Ok(m)
                        if m.get_field_by_name("missing")
                            .is_some_and(|v| v.as_list().is_some_and(|l| !l.is_empty())) =>
                    {
                        ("OK, parts missing".to_owned(), None)
                    }
                    Ok(_) => ("OK".to_owned(), None),
                    Err(e) => ("Undecodable".to_owned(), Some(format!("answer: {e}"))),
                },
                Ok(Err(status)) => {
                    let code = status.code();
                    let bad = matches!(code, Code::Internal | Code::Unknown)
                        .then(|| format!("{:?}", status.message()));
                    (format!("{code:?}"), bad)
                }
                Err(_) => ("NoAnswer".to_owned(), Some("within 10 s".to_owned())),
            };
            // One failure per RPC and code, whichever hop and role showed it: the
            // gateway passes the services' codes on.
            if let Some(bad) = bad {
                let key = format!("{path} answers {code}");
                let by = format!("{} as {}", target.hop, target.role);
                match found
                    .iter_mut()
                    .find(|(f, _): &&mut (Found, _)| f.key == key)
                {
                    Some((f, _)) => f.what = format!("{}, {by}", f.what),
                    None => found.push((
                        Found {
                            key,
                            what: format!("{code} {bad} to {by}"),
                        },
                        Some(i),
                    )),
                }
            }
            if count {
                let codes = self.answers.entry(path.to_owned()).or_default();
                *codes.entry(code).or_default() += 1;
            }
        }
        found
    }

    /// Sends one request alone: what went wrong, panics included.
    async fn probe(
        &mut self,
        rpc: &Rpc,
        targets: &[Target<'_>],
        request: &DynamicMessage,
        key: Option<&str>,
    ) -> Vec<(Found, Option<usize>)> {
        let before = panics().len();
        let answers = send(&rpc.path, targets, request, key).await;
        let mut found = self.judge(rpc, targets, answers, false);
        for panic in panics().split_off(before) {
            found.push((
                Found {
                    key: panic_key(&panic),
                    what: panic,
                },
                None,
            ));
        }
        found
    }

    /// Simplifies the failing request while it still fails with `key` (proptest's own
    /// shrinking, driven by hand because each step is an async call).
    async fn shrink(
        &mut self,
        rpc: &Rpc,
        targets: &[Target<'_>],
        tree: &mut dyn ValueTree<Value = DynamicMessage>,
        idempotency_key: Option<&str>,
        failure: &str,
        stop: Instant,
    ) -> (DynamicMessage, usize) {
        let mut smallest = tree.current();
        let mut steps = 0;
        if !tree.simplify() {
            return (smallest, steps);
        }
        while Instant::now() < stop {
            steps += 1;
            let current = tree.current();
            let found = self.probe(rpc, targets, &current, idempotency_key).await;
            let more = if found.iter().any(|(f, _)| f.key == failure) {
                smallest = current;
                tree.simplify()
            } else {
                tree.complicate()
            };
            if !more {
                break;
            }
        }
        (smallest, steps)
    }

    fn report(&self, seed: u64, fuzzed: Duration, total: Duration) {
        println!(
            "fuzz: seed {seed}: {} cases, {} requests in {:.1} s ({:.1} s in all)",
            self.cases,
            self.sent,
            fuzzed.as_secs_f64(),
            total.as_secs_f64()
        );
        for (path, codes) in &self.answers {
            let calls: usize = codes.values().sum();
            let mut codes: Vec<_> = codes.iter().collect();
            codes.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
            let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let spent = self.spent.get(path).copied().unwrap_or_default();
            println!(
                "  {path:<58} {calls:>5} calls, {:>5.1} s: {}",
                spent.as_secs_f64(),
                codes.join(", ")
            );
        }
        for (i, (key, f)) in self.failures.iter().enumerate() {
            println!("FAILURE {}: {key} ({} times)", i + 1, f.times);
            println!("  {}", f.what);
            println!("  request: {}", f.request);
            println!("  minimal: {} ({} shrink steps)", f.minimal, f.steps);
        }
    }
}
