//! One marker type per IPC operation, tying the operation's name to its shapes and their
//! `service-model-type` names (from the `_model_name()` of each class in
//! `awsiot/greengrasscoreipc/model.py`).
//!
//! A client calls `O::NAME` with an `O::Request` (`service-model-type` = `O::REQUEST_TYPE`)
//! and gets an `O::Response` (`O::RESPONSE_TYPE`); a streaming operation then delivers
//! `O::Event`s (`O::EVENT_TYPE`) until the stream is closed.

use super::error::SHAPE_PREFIX;
use super::model::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An IPC operation.
pub trait Operation {
    /// `operation` header value: `aws.greengrass#UpdateState`.
    const NAME: &'static str;
    /// `service-model-type` of the request: `aws.greengrass#UpdateStateRequest`.
    const REQUEST_TYPE: &'static str;
    /// `service-model-type` of the response: `aws.greengrass#UpdateStateResponse`.
    const RESPONSE_TYPE: &'static str;
    /// The request shape.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// The response shape.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// An operation whose stream stays open after the response and carries events.
pub trait StreamingOperation: Operation {
    /// `service-model-type` of each event: `aws.greengrass#IoTCoreMessage`.
    const EVENT_TYPE: &'static str;
    /// The event shape.
    type Event: Serialize + DeserializeOwned + Send + 'static;
}

macro_rules! operations {
    ($( $(#[$doc:meta])* $op:ident ($req:ty, $resp:ty $(, stream $event:ident)?) ; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $op;

            impl Operation for $op {
                const NAME: &'static str = concat!("aws.greengrass#", stringify!($op));
                const REQUEST_TYPE: &'static str = concat!("aws.greengrass#", stringify!($req));
                const RESPONSE_TYPE: &'static str = concat!("aws.greengrass#", stringify!($resp));
                type Request = $req;
                type Response = $resp;
            }

            $(
                impl StreamingOperation for $op {
                    const EVENT_TYPE: &'static str = concat!("aws.greengrass#", stringify!($event));
                    type Event = $event;
                }
            )?
        )*

        /// Every operation this crate models, by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OperationName {
            $(
                $(#[$doc])*
                $op,
            )*
        }

        impl OperationName {
            /// All of them.
            pub const ALL: &'static [OperationName] = &[$(OperationName::$op),*];

            /// The `operation` header value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(OperationName::$op => <$op as Operation>::NAME,)*
                }
            }

            /// The request's `service-model-type`.
            pub fn request_type(self) -> &'static str {
                match self {
                    $(OperationName::$op => <$op as Operation>::REQUEST_TYPE,)*
                }
            }

            /// The response's `service-model-type`.
            pub fn response_type(self) -> &'static str {
                match self {
                    $(OperationName::$op => <$op as Operation>::RESPONSE_TYPE,)*
                }
            }

            /// The events' `service-model-type`, for streaming operations.
            pub fn event_type(self) -> Option<&'static str> {
                match self {
                    $(OperationName::$op => operations!(@event $($event)?),)*
                }
            }
        }
    };
    (@event $event:ident) => { Some(concat!("aws.greengrass#", stringify!($event))) };
    (@event) => { None };
}

operations! {
    /// Reports the component's state (RUNNING or ERRORED) to the nucleus.
    UpdateState(UpdateStateRequest, UpdateStateResponse);
    /// Reads a component's configuration.
    GetConfiguration(GetConfigurationRequest, GetConfigurationResponse);
    /// Merges into the caller's configuration.
    UpdateConfiguration(UpdateConfigurationRequest, UpdateConfigurationResponse);
    /// Streams changes to a component's configuration.
    SubscribeToConfigurationUpdate(
        SubscribeToConfigurationUpdateRequest,
        SubscribeToConfigurationUpdateResponse,
        stream ConfigurationUpdateEvents
    );
    /// Publishes on local pub/sub.
    PublishToTopic(PublishToTopicRequest, PublishToTopicResponse);
    /// Streams local pub/sub messages matching a filter.
    SubscribeToTopic(SubscribeToTopicRequest, SubscribeToTopicResponse, stream SubscriptionResponseMessage);
    /// Publishes to AWS IoT Core through the core's MQTT connection.
    PublishToIoTCore(PublishToIoTCoreRequest, PublishToIoTCoreResponse);
    /// Streams AWS IoT Core messages matching a filter.
    SubscribeToIoTCore(SubscribeToIoTCoreRequest, SubscribeToIoTCoreResponse, stream IoTCoreMessage);
    /// Reads a local shadow.
    GetThingShadow(GetThingShadowRequest, GetThingShadowResponse);
    /// Updates a local shadow.
    UpdateThingShadow(UpdateThingShadowRequest, UpdateThingShadowResponse);
    /// Deletes a local shadow.
    DeleteThingShadow(DeleteThingShadowRequest, DeleteThingShadowResponse);
    /// Lists a thing's named local shadows.
    ListNamedShadowsForThing(ListNamedShadowsForThingRequest, ListNamedShadowsForThingResponse);
    /// Streams deployment notices before and after component updates.
    SubscribeToComponentUpdates(
        SubscribeToComponentUpdatesRequest,
        SubscribeToComponentUpdatesResponse,
        stream ComponentUpdatePolicyEvents
    );
    /// Asks the nucleus to postpone a component update.
    DeferComponentUpdate(DeferComponentUpdateRequest, DeferComponentUpdateResponse);
    /// Streams the configurations deployments propose, for the component to validate.
    SubscribeToValidateConfigurationUpdates(
        SubscribeToValidateConfigurationUpdatesRequest,
        SubscribeToValidateConfigurationUpdatesResponse,
        stream ValidateConfigurationUpdateEvents
    );
    /// Answers a validation event: ACCEPTED or REJECTED.
    SendConfigurationValidityReport(SendConfigurationValidityReportRequest, SendConfigurationValidityReportResponse);
    /// Restarts a component.
    RestartComponent(RestartComponentRequest, RestartComponentResponse);
    /// Queues a local deployment (Greengrass CLI `deployment create`).
    CreateLocalDeployment(CreateLocalDeploymentRequest, CreateLocalDeploymentResponse);
    /// Reads a local deployment's status (Greengrass CLI `deployment status`).
    GetLocalDeploymentStatus(GetLocalDeploymentStatusRequest, GetLocalDeploymentStatusResponse);
    /// Lists the local deployments (Greengrass CLI `deployment list`).
    ListLocalDeployments(ListLocalDeploymentsRequest, ListLocalDeploymentsResponse);
}

impl OperationName {
    /// The operation with this `operation` header value.
    pub fn from_name(name: &str) -> Option<Self> {
        let short = name.strip_prefix(SHAPE_PREFIX)?;
        Self::ALL.iter().copied().find(|op| op.as_str().get(SHAPE_PREFIX.len()..) == Some(short))
    }

    /// True when the operation streams events after its response.
    pub fn is_streaming(self) -> bool {
        self.event_type().is_some()
    }
}

impl std::fmt::Display for OperationName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_model_types_match_the_sdk() {
        // Spot checks against `_model_name()` in awsiot/greengrasscoreipc/model.py.
        assert_eq!(UpdateState::NAME, "aws.greengrass#UpdateState");
        assert_eq!(UpdateState::REQUEST_TYPE, "aws.greengrass#UpdateStateRequest");
        assert_eq!(PublishToIoTCore::RESPONSE_TYPE, "aws.greengrass#PublishToIoTCoreResponse");
        assert_eq!(SubscribeToTopic::EVENT_TYPE, "aws.greengrass#SubscriptionResponseMessage");
        assert_eq!(SubscribeToIoTCore::EVENT_TYPE, "aws.greengrass#IoTCoreMessage");
        assert_eq!(SubscribeToConfigurationUpdate::EVENT_TYPE, "aws.greengrass#ConfigurationUpdateEvents");
        assert_eq!(SubscribeToComponentUpdates::EVENT_TYPE, "aws.greengrass#ComponentUpdatePolicyEvents");
        assert_eq!(ListNamedShadowsForThing::REQUEST_TYPE, "aws.greengrass#ListNamedShadowsForThingRequest");
        assert_eq!(CreateLocalDeployment::REQUEST_TYPE, "aws.greengrass#CreateLocalDeploymentRequest");
        assert_eq!(GetLocalDeploymentStatus::RESPONSE_TYPE, "aws.greengrass#GetLocalDeploymentStatusResponse");
        assert_eq!(ListLocalDeployments::NAME, "aws.greengrass#ListLocalDeployments");
        assert_eq!(
            SubscribeToValidateConfigurationUpdates::EVENT_TYPE,
            "aws.greengrass#ValidateConfigurationUpdateEvents"
        );
        assert_eq!(
            SendConfigurationValidityReport::REQUEST_TYPE,
            "aws.greengrass#SendConfigurationValidityReportRequest"
        );
        assert_eq!(DeferComponentUpdate::RESPONSE_TYPE, "aws.greengrass#DeferComponentUpdateResponse");
    }

    #[test]
    fn operation_names_round_trip_and_know_which_stream() {
        assert_eq!(OperationName::ALL.len(), 20);
        for op in OperationName::ALL {
            assert_eq!(OperationName::from_name(op.as_str()), Some(*op));
        }
        let streaming: Vec<_> = OperationName::ALL.iter().filter(|o| o.is_streaming()).collect();
        assert_eq!(streaming.len(), 5);
        assert_eq!(OperationName::from_name("aws.greengrass#StopComponent"), None);
        assert_eq!(OperationName::from_name("UpdateState"), None);
    }
}
