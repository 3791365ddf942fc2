//! JSON log lines with the OpenTelemetry ids of the span they were logged in, so a log
//! line leads to its trace: `{"trace_id":"…","span_id":"…","timestamp":…}`.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// tracing-subscriber's JSON format (with the current span and its parents) plus
/// `trace_id` and `span_id` when the event happened inside a span.
pub struct WithTraceIds(Format<Json>);

impl Default for WithTraceIds {
    fn default() -> Self {
        WithTraceIds(
            tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(false),
        )
    }
}

impl<S> FormatEvent<S, JsonFields> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx
            .lookup_current()
            .map(|_| tracing::Span::current().context())
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid());
        match (ids, line.strip_prefix('{')) {
            (Some(sc), Some(rest)) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                sc.trace_id(),
                sc.span_id()
            ),
            _ => writer.write_str(&line),
        }
    }
}
