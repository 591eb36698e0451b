//! Quotas over HTTP: admission after the policy allows a request, the 429
//! in OpenAI's shape when a limit refuses it, `x-ratelimit-*` headers when
//! one admits it, and the tokens a generation used charged back.

use std::sync::{Arc, Mutex};

use auth::quota::{LimitKind, Remaining};
use auth::{Admission, Principal, QuotaExceeded, Quotas};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::error::ApiError;

/// One admitted request's charge, shared by the handler and a streaming
/// body; the account is settled when the last holder lets go.
#[derive(Clone)]
pub(crate) struct QuotaCharge(Arc<Mutex<Admission>>);

impl QuotaCharge {
    fn with(&self, f: impl FnOnce(&mut Admission)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// One more piece streamed: counted as a token, so a client that hangs
    /// up before the end still pays for what it received.
    pub fn piece(&self) {
        self.with(|a| a.add(1));
    }

    /// A count that replaces the running one: the prompt once submitted,
    /// then the engine's final count.
    pub fn usage(&self, prompt_tokens: u32, completion_tokens: u32) {
        self.with(|a| a.used(u64::from(prompt_tokens) + u64::from(completion_tokens)));
    }
}

/// Admits `principal`'s request, reserving `reserve_tokens`, at the
/// current time.
pub(crate) fn admit(
    quotas: &Arc<Quotas>,
    principal: &Principal,
    reserve_tokens: u64,
) -> Result<(QuotaCharge, Remaining), ApiError> {
    let (admission, remaining) = quotas
        .admit(
            &principal.account(),
            principal.limits,
            reserve_tokens,
            auth::unix_now_ms(),
        )
        .map_err(|refused| {
            tracing::info!(principal = %principal.id, %refused, "request refused by quota");
            exceeded(&refused)
        })?;
    Ok((QuotaCharge(Arc::new(Mutex::new(admission))), remaining))
}

/// OpenAI's answer to a rate limit: `rate_limit_exceeded` typed by what
/// ran out, or `insufficient_quota` for a spent budget.
fn exceeded(refused: &QuotaExceeded) -> ApiError {
    let (kind, code, what) = match refused.kind {
        LimitKind::RequestsPerMinute => ("requests", "rate_limit_exceeded", "requests per minute"),
        LimitKind::TokensPerMinute => ("tokens", "rate_limit_exceeded", "tokens per minute"),
        LimitKind::TokensPerDay => ("insufficient_quota", "insufficient_quota", "tokens per day"),
    };
    let retry_after = u32::try_from(refused.retry_after_secs).unwrap_or(u32::MAX);
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        kind,
        code,
        message: format!(
            "Rate limit reached on {what}: limit {}. Please try again in {retry_after}s.",
            refused.limit
        ),
        param: None,
        retry_after: Some(retry_after),
    }
}

/// OpenAI's rate-limit headers, so clients can pace themselves.
pub(crate) fn headers(remaining: &Remaining, headers: &mut HeaderMap) {
    let mut put = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    if let Some((limit, left)) = remaining.requests {
        put("x-ratelimit-limit-requests", limit);
        put("x-ratelimit-remaining-requests", left);
    }
    if let Some((limit, left)) = remaining.tokens {
        put("x-ratelimit-limit-tokens", limit);
        put("x-ratelimit-remaining-tokens", left);
    }
}
