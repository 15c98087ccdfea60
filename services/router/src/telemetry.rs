//! The names of the router service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

/// Messages handled by avatars, by kind and outcome.
pub(crate) const MESSAGES: &str = "tocsin_router_messages_total";
/// Avatars in memory, by silo.
pub(crate) const ACTIVE_AVATARS: &str = "tocsin_router_active_avatars";
/// Avatars loaded into memory.
pub(crate) const AVATAR_ACTIVATIONS: &str = "tocsin_router_avatar_activations_total";
/// Users with an escalation timer pending, by silo.
pub(crate) const TIMERS: &str = "tocsin_router_timers";

/// Give every metric its help text (once, at start).
pub(crate) fn describe() {
    metrics::describe_counter!(MESSAGES, "messages handled by avatars, by kind and outcome");
    metrics::describe_gauge!(ACTIVE_AVATARS, "avatars in memory, by silo");
    metrics::describe_counter!(AVATAR_ACTIVATIONS, "avatars loaded into memory");
    metrics::describe_gauge!(TIMERS, "users with an escalation timer pending, by silo");
}
