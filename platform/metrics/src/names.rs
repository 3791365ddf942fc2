//! Every metric a PopugJira process exposes: its name (a constant the recording code
//! uses) and its help text (given to the recorder once, by [`describe`]). Names follow
//! Prometheus conventions: `_total` counters, `_seconds` histograms, base units.
//! docs/operations.md explains each and the alerts built on them.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

// gRPC, server side: the layer in front of every service (grpc-ecosystem names).
pub const GRPC_SERVER_STARTED: &str = "grpc_server_started_total";
pub const GRPC_SERVER_HANDLED: &str = "grpc_server_handled_total";
pub const GRPC_SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
pub const GRPC_SERVER_IN_FLIGHT: &str = "grpc_server_in_flight_requests";
// gRPC, client side: the gateway's calls to its upstreams.
pub const GRPC_CLIENT_STARTED: &str = "grpc_client_started_total";
pub const GRPC_CLIENT_HANDLED: &str = "grpc_client_handled_total";
pub const GRPC_CLIENT_HANDLING_SECONDS: &str = "grpc_client_handling_seconds";

// The process and the service.
pub const BUILD_INFO: &str = "popug_build_info";
pub const SERVING: &str = "popug_serving";
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

// Token verification.
pub const JWKS_FETCHES: &str = "auth_jwks_fetches_total";

// The database pool.
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "db_pool_max_connections";
pub const DB_POOL_ACQUIRE_SECONDS: &str = "db_pool_acquire_seconds";

// The event bus.
pub const OUTBOX_PENDING: &str = "eventbus_outbox_pending";
pub const OUTBOX_OLDEST_AGE: &str = "eventbus_outbox_oldest_age_seconds";
pub const RELAY_PUBLISHED: &str = "eventbus_relay_published_total";
pub const RELAY_FAILURES: &str = "eventbus_relay_failures_total";
pub const CONSUMER_PROCESSED: &str = "eventbus_consumer_processed_total";
pub const CONSUMER_REDELIVERED: &str = "eventbus_consumer_redelivered_total";
pub const CONSUMER_DEAD_LETTERED: &str = "eventbus_consumer_dead_lettered_total";
pub const CONSUMER_PENDING: &str = "eventbus_consumer_pending";
pub const CONSUMER_ACK_PENDING: &str = "eventbus_consumer_ack_pending";
pub const DEAD_LETTERS: &str = "eventbus_dead_letters";

// Accounting.
pub const LEDGER_ENTRIES: &str = "accounting_ledger_entries_total";
pub const LEDGER_CENTS: &str = "accounting_ledger_cents_total";
pub const DAY_CLOSES: &str = "accounting_day_closes_total";
pub const PAYOUT_MAILS: &str = "accounting_payout_mails_total";
pub const LAST_CLOSED_DAY: &str = "accounting_last_closed_day_timestamp_seconds";
pub const PAYOUT_MAILS_UNSENT: &str = "accounting_payout_mails_unsent";

// The gateway.
pub const GATEWAY_REFUSED: &str = "gateway_refused_total";
pub const GATEWAY_PARTS_MISSING: &str = "gateway_composition_parts_missing_total";
pub const GATEWAY_CACHE_HITS: &str = "gateway_cache_hits_total";
pub const GATEWAY_CACHE_MISSES: &str = "gateway_cache_misses_total";
pub const GATEWAY_CACHE_ERRORS: &str = "gateway_cache_errors_total";

/// Gives the recorder every metric's help text and unit.
pub fn describe() {
    describe_counter!(GRPC_SERVER_STARTED, "RPCs started on the server.");
    describe_counter!(
        GRPC_SERVER_HANDLED,
        "RPCs completed on the server, by status code."
    );
    describe_histogram!(
        GRPC_SERVER_HANDLING_SECONDS,
        Unit::Seconds,
        "Time from an RPC's arrival to its status, on the server."
    );
    describe_gauge!(GRPC_SERVER_IN_FLIGHT, "RPCs being handled now.");
    describe_counter!(
        GRPC_CLIENT_STARTED,
        "RPCs the gateway started to an upstream."
    );
    describe_counter!(
        GRPC_CLIENT_HANDLED,
        "RPCs the gateway completed to an upstream, by status code."
    );
    describe_histogram!(
        GRPC_CLIENT_HANDLING_SECONDS,
        Unit::Seconds,
        "Time from the gateway's call to an upstream to its status."
    );
    describe_gauge!(BUILD_INFO, "Always 1: the service and its version.");
    describe_gauge!(
        SERVING,
        "1 while the service reports SERVING (prepared; database and NATS reachable)."
    );
    describe_counter!(
        JWKS_FETCHES,
        "Fetches of Account's JWKS by the token verifier, by result."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Connections of the database pool, in use or idle."
    );
    describe_gauge!(DB_POOL_MAX_CONNECTIONS, "The database pool's size limit.");
    describe_histogram!(
        DB_POOL_ACQUIRE_SECONDS,
        Unit::Seconds,
        "Time to get a pooled connection, sampled by the health probe every 500 ms."
    );
    describe_gauge!(OUTBOX_PENDING, "Outbox rows not yet published to NATS.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest unpublished outbox row (0 when none)."
    );
    describe_counter!(RELAY_PUBLISHED, "Events the relay published to NATS.");
    describe_counter!(
        RELAY_FAILURES,
        "Relay passes that failed (the database or NATS away); retried."
    );
    describe_counter!(
        CONSUMER_PROCESSED,
        "Events a consumer finished (applied or skipped as already applied)."
    );
    describe_counter!(
        CONSUMER_REDELIVERED,
        "Events a consumer received more than once (a crash, a rollback, the ack wait)."
    );
    describe_counter!(
        CONSUMER_DEAD_LETTERED,
        "Events a consumer could never apply and sent to the dead-letter stream."
    );
    describe_gauge!(
        CONSUMER_PENDING,
        "Events in the stream the consumer has not received yet (JetStream num_pending)."
    );
    describe_gauge!(
        CONSUMER_ACK_PENDING,
        "Events the consumer received but has not acknowledged (JetStream num_ack_pending)."
    );
    describe_gauge!(
        DEAD_LETTERS,
        "Dead letters of a consumer waiting in the dead-letter stream (replay or let expire)."
    );
    describe_gauge!(
        PAYOUT_MAILS_UNSENT,
        "Payout e-mails not sent yet, by state: queued, sending, retrying, given_up."
    );
    describe_counter!(
        LEDGER_ENTRIES,
        "Ledger entries in the database, by kind (entries are never removed)."
    );
    describe_counter!(
        LEDGER_CENTS,
        "Cents moved by the ledger's entries, by kind (absolute amounts)."
    );
    describe_counter!(DAY_CLOSES, "Billing days this process closed.");
    describe_counter!(
        PAYOUT_MAILS,
        "Payout e-mail attempts of this process, by result (sent, failed)."
    );
    describe_gauge!(
        LAST_CLOSED_DAY,
        Unit::Seconds,
        "Start (UTC) of the last closed billing day, since the Unix epoch."
    );
    describe_counter!(
        GATEWAY_REFUSED,
        "Calls the gateway refused itself, by reason (and cause, for unauthenticated)."
    );
    describe_counter!(
        GATEWAY_PARTS_MISSING,
        "Composed answers served without one of their parts, by part."
    );
    describe_counter!(GATEWAY_CACHE_HITS, "Reads served from the Redis cache.");
    describe_counter!(GATEWAY_CACHE_MISSES, "Reads the Redis cache did not hold.");
    describe_counter!(
        GATEWAY_CACHE_ERRORS,
        "Cache operations that failed or timed out (the call went on uncached)."
    );
}
