//! The `authorizer` Lambda: a REQUEST authorizer for `$connect`.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::json;

use crate::auth::{AuthError, JwtVerifier, token_from};
use crate::metrics::names;

/// The token: the `token` query parameter (browsers cannot set headers on a
/// WebSocket), else an `Authorization: Bearer` header.
pub fn token_of(request: &ApiGatewayCustomAuthorizerRequestTypeRequest) -> Option<String> {
    let authorization = request.headers.get("authorization").and_then(|value| value.to_str().ok());
    token_from(request.query_string_parameters.first("token"), authorization)
}

fn policy(principal_id: &str, effect: IamPolicyEffect, method_arn: &str) -> ApiGatewayCustomAuthorizerResponse {
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".to_owned()];
    statement.effect = effect;
    statement.resource = vec![method_arn.to_owned()];
    let mut document = ApiGatewayCustomAuthorizerPolicy::default();
    document.version = Some("2012-10-17".to_owned());
    document.statement = vec![statement];
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal_id.to_owned());
    response.policy_document = document;
    response
}

/// Decides one `$connect`: Allow with `principalId` and `context.userId` set to the
/// token's `sub`, or Deny.
pub async fn authorize(
    verifier: &JwtVerifier,
    request: &ApiGatewayCustomAuthorizerRequestTypeRequest,
) -> ApiGatewayCustomAuthorizerResponse {
    let method_arn = request.method_arn.as_deref().unwrap_or("*");
    let verified = match token_of(request) {
        Some(token) => verifier.verify(&token).await,
        None => Err(AuthError::MissingToken),
    };
    match verified {
        Ok(user_id) => {
            verifier.metrics().add(names::ALLOWED, 1);
            let mut response = policy(user_id.as_str(), IamPolicyEffect::Allow, method_arn);
            response.context = json!({ "userId": user_id.as_str() });
            response
        }
        Err(error) => {
            verifier.metrics().add_by(names::DENIED, "Reason", error.reason(), 1);
            tracing::warn!(%error, "connection refused");
            policy("anonymous", IamPolicyEffect::Deny, method_arn)
        }
    }
}

pub async fn handle(
    verifier: &JwtVerifier,
    event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>,
) -> Result<ApiGatewayCustomAuthorizerResponse, Error> {
    Ok(authorize(verifier, &event.payload).await)
}
