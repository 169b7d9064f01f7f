//! Bearer authentication: `Authorization: Bearer <access token>` on every user operation.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::service::tokens::AccessClaims;
use crate::state::AppState;

/// The verified claims of the caller's access token. Anything missing, malformed, expired or
/// not signed by us is answered 401 `invalid_token` before the handler runs.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "verify_bearer")]
pub struct BearerAuth(pub AccessClaims);

async fn verify_bearer(req: &Request, bearer: Bearer) -> Option<AccessClaims> {
    let state = req.data::<AppState>()?;
    state.tokens.verify_access(&bearer.token).ok()
}
