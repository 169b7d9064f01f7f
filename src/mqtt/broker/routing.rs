//! Where the embedded broker sends what devices publish: shared subscriptions keyed by device,
//! and telemetry straight into this process's intake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rmqtt::context::ServerContext;
use rmqtt::session::Session;
use rmqtt::shared::{DefaultShared, Entry, RetainLoadCallback, Shared};
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, ForwardedCount, ForwardedRecipients, From as Sender, Id, IsOnline, MsgID, NodeId,
    Reason, SessionStatus, SharedGroup, SubRelations, SubRelationsMap, SubsSearchParams,
    SubsSearchResult, SubscriptionIdentifier, SubscriptionOptions, To, TopicFilter, TopicName,
};
use tokio::sync::watch;

use crate::mqtt::client::Inbound;
use crate::mqtt::topics::{DeviceTopic, TopicKind};

/// Shared subscriptions for the embedded broker: each device's messages go to one member of
/// the group, chosen by the device, so one device's telemetry stays in order.
pub(super) struct ShareByDevice;

#[async_trait]
impl SharedSubscription for ShareByDevice {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        publisher_id: &Id,
        _topic: &TopicName,
        ncs: &[(
            NodeId,
            ClientId,
            SubscriptionOptions,
            Option<Vec<SubscriptionIdentifier>>,
            Option<IsOnline>,
        )],
    ) -> Option<(usize, IsOnline)> {
        let online: Vec<usize> = ncs
            .iter()
            .enumerate()
            .filter(|(_, (.., is_online))| is_online.unwrap_or(true))
            .map(|(index, _)| index)
            .collect();
        let candidates = if online.is_empty() {
            (0..ncs.len()).collect()
        } else {
            online
        };
        if candidates.is_empty() {
            return None;
        }
        let hash = publisher_id.client_id.bytes().fold(0u64, |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(u64::from(byte))
        });
        let index = candidates[(hash % candidates.len() as u64) as usize];
        Some((index, ncs[index].4.unwrap_or(true)))
    }
}

/// Messages rmqtt's routing could not deliver, and to whom.
type Undelivered = Vec<(To, Sender, rmqtt::types::Publish, Reason)>;

/// The backend's telemetry intake as the broker holds it: [`Inbound`] made object-safe.
pub(super) trait TelemetryIntake: Send + Sync {
    fn take(
        &self,
        topic: DeviceTopic,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<I: Inbound> TelemetryIntake for I {
    fn take(
        &self,
        topic: DeviceTopic,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.deliver(topic, payload))
    }
}

/// rmqtt's own message routing, except that device telemetry goes to the backend's intake in
/// this process instead of to subscribers.
///
/// rmqtt calls `forwards` for every publish that passed the ACL hook, from the publishing
/// device's session, and acknowledges a QoS 1 publish once it returns. Waiting here for room in
/// the intake's bounded queue is therefore backpressure all the way to the device: its
/// unacknowledged messages stay with it, and nothing the broker acknowledged can be dropped
/// later for want of room. It also spares every message a second trip through the broker and
/// the backend's MQTT client.
///
/// So telemetry is not routed to MQTT subscribers of this broker, other replicas included:
/// this process stores all of it. Every other message is routed as usual.
pub(super) struct TelemetryInProcess {
    pub(super) routing: DefaultShared,
    pub(super) intake: watch::Receiver<Option<Arc<dyn TelemetryIntake>>>,
}

impl TelemetryInProcess {
    /// Hands one telemetry message to the intake, waiting while there is none.
    async fn take(&self, topic: DeviceTopic, payload: Bytes) {
        let mut slot = self.intake.clone();
        let intake = loop {
            if let Some(intake) = slot.borrow_and_update().clone() {
                break intake;
            }
            if slot.changed().await.is_err() {
                // The broker is gone, and the message with it: never acknowledge.
                std::future::pending::<()>().await;
            }
        };
        intake.take(topic, payload).await;
    }
}

#[async_trait]
impl Shared for TelemetryInProcess {
    fn entry(&self, id: Id) -> Box<dyn Entry> {
        self.routing.entry(id)
    }

    fn exist(&self, client_id: &str) -> bool {
        self.routing.exist(client_id)
    }

    async fn forwards(
        &self,
        msg_id: Option<MsgID>,
        from: Sender,
        publish: rmqtt::types::Publish,
    ) -> Result<ForwardedCount, (ForwardedCount, Undelivered)> {
        match DeviceTopic::parse(&publish.topic) {
            Some(topic)
                if topic.kind == TopicKind::Telemetry && publish.target_clientid.is_none() =>
            {
                self.take(topic, publish.payload.clone()).await;
                Ok(1)
            }
            _ => self.routing.forwards(msg_id, from, publish).await,
        }
    }

    async fn forwards_and_get_shareds(
        &self,
        from: Sender,
        publish: rmqtt::types::Publish,
    ) -> Result<(SubRelationsMap, ForwardedRecipients), (ForwardedRecipients, Undelivered)> {
        self.routing.forwards_and_get_shareds(from, publish).await
    }

    async fn forwards_to(
        &self,
        from: Sender,
        publish: &rmqtt::types::Publish,
        relations: SubRelations,
        msg_id: Option<MsgID>,
    ) -> Result<ForwardedRecipients, (ForwardedRecipients, Undelivered)> {
        self.routing
            .forwards_to(from, publish, relations, msg_id)
            .await
    }

    fn iter(&self) -> Box<dyn Iterator<Item = Box<dyn Entry>> + Sync + Send + '_> {
        self.routing.iter()
    }

    fn random_session(&self) -> Option<Session> {
        self.routing.random_session()
    }

    async fn session_status(&self, client_id: &str) -> Option<SessionStatus> {
        self.routing.session_status(client_id).await
    }

    async fn client_states_count(&self) -> usize {
        self.routing.client_states_count().await
    }

    fn sessions_count(&self) -> usize {
        self.routing.sessions_count()
    }

    async fn query_subscriptions(&self, q: &SubsSearchParams) -> Vec<SubsSearchResult> {
        self.routing.query_subscriptions(q).await
    }

    async fn subscriptions_count(&self) -> usize {
        self.routing.subscriptions_count().await
    }

    async fn retain_load_with(
        &self,
        topic_filter: &TopicFilter,
        cb: Arc<dyn RetainLoadCallback>,
    ) -> rmqtt::Result<Vec<(NodeId, MsgID)>> {
        self.routing.retain_load_with(topic_filter, cb).await
    }
}
