//! The names of the router service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

tocsin_runtime::metric_names! {
    MESSAGES: counter = "tocsin_router_messages_total", "messages handled by avatars, by kind and outcome";
    ACTIVE_AVATARS: gauge = "tocsin_router_active_avatars", "avatars in memory, by silo";
    AVATAR_ACTIVATIONS: counter = "tocsin_router_avatar_activations_total", "avatars loaded into memory";
    TIMERS: gauge = "tocsin_router_timers", "users with an escalation timer pending, by silo";
}
