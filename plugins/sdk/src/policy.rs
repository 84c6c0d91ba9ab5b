//! Policies: who may connect, and which subscriptions may start.

use crate::{GraphQLError, Object, Principal, Subscription, Value};

/// Checks each subscribe.
pub trait SubscriptionPolicy {
    /// `Ok` lets the subscription start; `Err` refuses it with this error.
    fn check(subscription: &Subscription) -> Result<(), GraphQLError>;
}

/// What a connection policy sees.
#[derive(Debug, Default)]
pub struct ConnectionRequest {
    /// The `connection_init` payload.
    pub init_payload: Object,
    /// The upgrade request's headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl ConnectionRequest {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A connection policy's yes.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Who connected.
    pub principal: Principal,
    /// Sent back in `connection_ack`.
    pub ack: Option<Value>,
}

/// Accepts or refuses each `connection_init`.
pub trait ConnectionPolicy {
    /// `Ok` accepts; `Err(reason)` closes the connection with 4403.
    fn check(request: &ConnectionRequest) -> Result<Accepted, String>;
}

/// Exports a type implementing [`SubscriptionPolicy`].
#[macro_export]
macro_rules! export_subscription_policy {
    ($ty:ty) => {
        const _: () = {
            struct __FanwirePolicy;
            impl $crate::wit::exports::fanwire::plugin::subscription::Guest for __FanwirePolicy {
                fn check(
                    subscription: $crate::wit::types::Subscription,
                ) -> ::std::result::Result<(), $crate::wit::types::GraphqlError> {
                    <$ty as $crate::SubscriptionPolicy>::check(&subscription.into())
                        .map_err(::std::convert::Into::into)
                }
            }
    $crate::wit::__export_world!(__FanwirePolicy with_types_in $crate::wit);
        };
    };
}

/// Exports a type implementing [`ConnectionPolicy`].
#[macro_export]
macro_rules! export_connection_policy {
    ($ty:ty) => {
        const _: () = {
            struct __FanwirePolicy;
            impl $crate::wit::exports::fanwire::plugin::connection::Guest for __FanwirePolicy {
                fn check(
                    request: $crate::wit::exports::fanwire::plugin::connection::Request,
                ) -> ::std::result::Result<
                    $crate::wit::exports::fanwire::plugin::connection::Accepted,
                    ::std::string::String,
                > {
                    $crate::policy::__connection_check::<$ty>(request)
                }
            }
    $crate::wit::__export_world!(__FanwirePolicy with_types_in $crate::wit);
        };
    };
}

#[cfg(feature = "connection-policy")]
#[doc(hidden)]
pub fn __connection_check<P: ConnectionPolicy>(
    request: crate::wit::exports::fanwire::plugin::connection::Request,
) -> Result<crate::wit::exports::fanwire::plugin::connection::Accepted, String> {
    let request = ConnectionRequest {
        init_payload: crate::object(&request.init_payload),
        headers: request
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
    };
    P::check(&request).map(
        |a| crate::wit::exports::fanwire::plugin::connection::Accepted {
            principal: a.principal.into(),
            ack: a.ack.map(|v| v.to_string()),
        },
    )
}
