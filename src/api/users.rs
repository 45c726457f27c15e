//! User accounts: sign-up, read, update, delete, list and password change.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::body::{optional_str, JsonObject, JsonOrForm};
use super::json::{JsonView, Rfc3339};
use super::security::{
    MaybeCaller, CHANGE_PASSWORD, CREATE_USER, DELETE_CONSENT, DELETE_USER, GET_USER,
    LIST_CONSENTS, LIST_USERS, UPDATE_USER,
};
use super::{ApiError, ApiTags, Caller, Empty, RequestCtx};
use crate::domain::{Email, NewPassword, PersonName, Role, Scope, User, UserCursor};
use crate::service::{AppState, NewAccount, Verdict};

pub struct UsersApi;

/// A user account as the API shows it. Never contains a password or hash.
#[derive(Object)]
pub struct UserBody {
    /// The user's id (a UUID).
    pub id: Uuid,
    /// The email, as given at sign-up (trimmed). Unique regardless of case.
    pub email: String,
    /// Whether the address is proven: a code sent there came back
    /// (`POST /api/v1/auth/verify-email`), or an operator vouched for it.
    pub email_verified: bool,
    /// First name, or null.
    #[oai(nullable)]
    pub first_name: Option<String>,
    /// Last name, or null.
    #[oai(nullable)]
    pub last_name: Option<String>,
    pub role: UserRole,
    /// When the account was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When the account last changed (RFC 3339, UTC).
    pub updated_at: DateTime<Utc>,
}

/// What is sent for a `UserBody`: written straight from the stored user, with no copy of
/// its strings (`GET /users/me` is the hottest route). Same JSON as `UserBody` (tested).
pub struct UserView(pub Arc<User>);

impl serde::Serialize for UserView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let u = &*self.0;
        let mut body = serializer.serialize_struct("UserBody", 8)?;
        body.serialize_field("id", &u.id)?;
        body.serialize_field("email", u.email.as_str())?;
        body.serialize_field("email_verified", &u.email_verified)?;
        body.serialize_field("first_name", &u.first_name.as_ref().map(|n| n.as_str()))?;
        body.serialize_field("last_name", &u.last_name.as_ref().map(|n| n.as_str()))?;
        body.serialize_field("role", &UserRole::from(u.role))?;
        body.serialize_field("created_at", &Rfc3339(u.created_at))?;
        body.serialize_field("updated_at", &Rfc3339(u.updated_at))?;
        body.end()
    }
}

impl From<&User> for UserBody {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.as_str().to_owned(),
            email_verified: u.email_verified,
            first_name: u.first_name.as_ref().map(|n| n.as_str().to_owned()),
            last_name: u.last_name.as_ref().map(|n| n.as_str().to_owned()),
            role: u.role.into(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// What a user may do: `user` reaches their own record, `admin` every record. Only an
/// admin may set or change a role (default `user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum, serde::Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    User,
    Admin,
}

impl From<Role> for UserRole {
    fn from(role: Role) -> Self {
        match role {
            Role::User => Self::User,
            Role::Admin => Self::Admin,
        }
    }
}

/// A new account.
#[derive(Object)]
#[oai(example)]
pub struct NewUserRequest {
    /// The email to log in with.
    #[oai(validator(min_length = 1, max_length = 254))]
    pub email: String,
    /// 8 to 256 characters.
    #[oai(validator(min_length = 8, max_length = 256))]
    pub password: Password,
    /// First name (optional).
    #[oai(
        nullable,
        validator(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub first_name: Option<String>,
    /// Last name (optional).
    #[oai(
        nullable,
        validator(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub last_name: Option<String>,
    // Documented on UserRole: a doc comment here would wrap the $ref in allOf.
    pub role: Option<UserRole>,
    /// Admins only: `true` vouches for the address (no verification message is sent).
    /// Default false: a message with a code goes to the address.
    pub email_verified: Option<bool>,
}

/// Changes to an account; absent fields stay as they are, `null` clears a name.
#[derive(Object)]
#[oai(example)]
pub struct UpdateUserRequest {
    /// New first name.
    #[oai(
        nullable,
        validator(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub first_name: Option<String>,
    /// New last name.
    #[oai(
        nullable,
        validator(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub last_name: Option<String>,
    // Only an admin may change it (see UserRole).
    pub role: Option<UserRole>,
    /// Admins only: vouch for the address (`true`), or withdraw that (`false`).
    pub email_verified: Option<bool>,
}

/// A password change: form-encoded or JSON.
#[derive(Object)]
#[oai(example)]
pub struct ChangePasswordRequest {
    /// The password in use now.
    #[oai(validator(min_length = 1))]
    pub current_password: Password,
    /// The new password, 8 to 256 characters.
    #[oai(validator(min_length = 8, max_length = 256))]
    pub new_password: Password,
}

#[derive(ApiResponse)]
pub enum PasswordChangedResponse {
    /// Changed. Every other session of the user has ended; this one goes on.
    #[oai(status = 200)]
    Ok(Json<Empty>),
}

#[derive(ApiResponse)]
pub enum UserResponse {
    /// The user.
    #[oai(status = 200)]
    Ok(JsonView<UserBody, UserView>),
}

#[derive(ApiResponse)]
pub enum UserListResponse {
    /// A page of users, oldest first.
    #[oai(status = 200)]
    Ok(
        JsonView<Vec<UserBody>, Vec<UserView>>,
        /// Present when more users follow this page (RFC 8288):
        /// `<PUBLIC_URL/api/v1/users?after=CURSOR&limit=N>; rel="next"`, the URL of the next
        /// page. Absent on the last page.
        #[oai(header = "Link")]
        Option<String>,
    ),
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// The new user.
    #[oai(status = 201)]
    Created(JsonView<UserBody, UserView>),
}

#[derive(ApiResponse)]
pub enum DeletedResponse {
    /// The user is gone and their tokens stopped working.
    #[oai(status = 200)]
    Ok(Json<Empty>),
}

/// Optional name field: absent → unchanged (`None`), null → cleared, string → parsed.
fn name_field(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<Option<PersonName>>, ApiError> {
    if !fields.contains_key(name) {
        return Ok(None);
    }
    match optional_str(fields, name)? {
        None => Ok(Some(None)),
        Some(raw) => Ok(Some(PersonName::parse(raw, name)?)),
    }
}

/// Optional role: absent → unchanged / default; `null` is not a role.
fn role_field(fields: &Map<String, Value>) -> Result<Option<Role>, ApiError> {
    match fields.get("role") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Role::parse(s)?)),
        Some(_) => Err(crate::domain::DomainError::InvalidRole.into()),
    }
}

/// Optional `email_verified`: absent → unchanged / default. Only an admin may change it;
/// anyone may restate what it is (`current`), as a user JSON sent back unchanged does.
fn verified_field(
    fields: &Map<String, Value>,
    is_admin: bool,
    current: bool,
) -> Result<Option<bool>, ApiError> {
    match fields.get("email_verified") {
        None => Ok(None),
        Some(Value::Bool(b)) if is_admin => Ok(Some(*b)),
        Some(Value::Bool(b)) if *b == current => Ok(None),
        Some(Value::Bool(_)) => Err(ApiError::forbidden()),
        Some(_) => Err(ApiError::bad_request(
            "email_verified must be true or false",
        )),
    }
}

/// Sign-up or admin creation, from the raw JSON object.
async fn create(
    state: &AppState,
    caller: Option<&Caller>,
    fields: Map<String, Value>,
    audit: &crate::audit::Context,
) -> Result<User, ApiError> {
    let email = match fields.get("email") {
        None | Some(Value::Null) => return Err(crate::domain::DomainError::EmailMissing.into()),
        Some(Value::String(s)) => Email::parse(s)?,
        Some(_) => return Err(ApiError::bad_request("email must be a string")),
    };
    let password = match fields.get("password") {
        None | Some(Value::Null) => return Err(crate::domain::DomainError::PasswordMissing.into()),
        Some(Value::String(s)) => NewPassword::parse(SecretString::from(s.as_str()))?,
        Some(_) => return Err(ApiError::bad_request("password must be a string")),
    };
    let first_name = name_field(&fields, "first_name")?.flatten();
    let last_name = name_field(&fields, "last_name")?.flatten();
    let role = role_field(&fields)?.unwrap_or(Role::User);
    let is_admin = caller.is_some_and(|c| c.has_authority(Scope::UsersWrite));
    if role != Role::User && !is_admin {
        return Err(ApiError::forbidden());
    }
    let email_verified = verified_field(&fields, is_admin, false)?.unwrap_or(false);
    let new = NewAccount {
        email,
        password,
        role,
        first_name,
        last_name,
        email_verified,
    };
    Ok(state.sign_up(new, caller.map(Caller::label), audit).await?)
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Users")]
impl UsersApi {
    /// List users
    ///
    /// Users ordered by creation time (then id), a page at a time. Admins (`users:read`)
    /// only. While more users follow, the `Link` header names the next page
    /// (`rel="next"`, with `after`): follow it to page through any number of users at the
    /// same cost per page, without repeating or skipping anyone when users are created or
    /// deleted meanwhile. `offset` paging works too, but costs more the deeper it goes.
    #[oai(path = "/users", method = "get", operation_id = "listUsers")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// How many users to return (1 to 1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// How many users to skip (default 0). Not together with `after`.
        #[oai(validator(minimum(value = "0"), maximum(value = "4294967295")))]
        offset: Query<Option<u32>>,
        /// Start after this position: the opaque cursor in the previous page's `Link`
        /// header. Not together with `offset` (400); a value not issued as a cursor is 400.
        after: Query<Option<String>>,
    ) -> Result<UserListResponse, ApiError> {
        caller.authorize(LIST_USERS, None)?;
        let limit = limit.0.unwrap_or(100) as usize;
        // One more than the page: whether another page follows (the `Link` header).
        let mut users = match (after.0, offset.0) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "after and offset cannot be used together",
                ))
            }
            (Some(after), None) => {
                let after = UserCursor::parse(&after)?;
                state.store.list_users_after(Some(after), limit + 1).await?
            }
            (None, offset) => {
                let offset = offset.unwrap_or(0) as usize;
                state.store.list_users(offset, limit + 1).await?
            }
        };
        let next = (users.len() > limit).then(|| {
            users.truncate(limit);
            let last = UserCursor::of(users.last().expect("limit is at least 1"));
            format!(
                "<{}/api/v1/users?after={}&limit={limit}>; rel=\"next\"",
                state.public_url,
                last.encode()
            )
        });
        Ok(UserListResponse::Ok(
            JsonView::new(users.into_iter().map(UserView).collect()),
            next,
        ))
    }

    /// Get a user
    ///
    /// `me` is the caller. Users may read themselves; admins (`users:read`) anyone.
    #[oai(path = "/users/:id", method = "get", operation_id = "getUser")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// A user id, or `me`.
        id: Path<String>,
    ) -> Result<UserResponse, ApiError> {
        let target = caller.target(&id.0)?;
        caller.authorize(GET_USER, target)?;
        if let Some(me) = caller.shared_user().filter(|u| Some(u.id) == target) {
            return Ok(UserResponse::Ok(JsonView::new(UserView(Arc::clone(me)))));
        }
        let user = match target {
            Some(id) => state.store.user(id).await?,
            None => None,
        };
        let user = user.ok_or_else(ApiError::not_found)?;
        Ok(UserResponse::Ok(JsonView::new(UserView(user))))
    }

    /// Create a user (sign up)
    ///
    /// Open to anyone while SIGNUP_ENABLED is true; otherwise admins (`users:write`) only.
    /// Only an admin may set `role`.
    #[oai(path = "/users", method = "post", operation_id = "createUser")]
    async fn create_user(
        &self,
        state: Data<&Arc<AppState>>,
        caller: MaybeCaller,
        ctx: RequestCtx,
        body: JsonObject<NewUserRequest>,
    ) -> Result<CreatedResponse, ApiError> {
        let caller = caller.0;
        if !state.config.signup_enabled {
            match &caller {
                None => return Err(ApiError::unauthorized()),
                Some(c) => c.authorize(CREATE_USER, None)?,
            }
        }
        let fields = body.into_object()?;
        let user = create(&state, caller.as_ref(), fields, &ctx.audit()).await?;
        Ok(CreatedResponse::Created(JsonView::new(UserView(Arc::new(
            user,
        )))))
    }

    /// Update a user
    ///
    /// Changes `first_name` and `last_name`; an admin may also change `role`. Users may
    /// update themselves; admins (`users:write`) anyone.
    #[oai(path = "/users/:id", method = "put", operation_id = "updateUser")]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// A user id, or `me`.
        id: Path<String>,
        body: JsonObject<UpdateUserRequest>,
    ) -> Result<UserResponse, ApiError> {
        let target = caller.target(&id.0)?;
        caller.authorize(UPDATE_USER, target)?;
        let target = target.ok_or_else(ApiError::not_found)?;
        let current = state
            .store
            .user(target)
            .await?
            .ok_or_else(ApiError::not_found)?;
        let fields = body.into_object()?;
        let first_name = name_field(&fields, "first_name")?;
        let last_name = name_field(&fields, "last_name")?;
        let role = role_field(&fields)?;
        let may_set_role = caller.has_authority(Scope::UsersWrite);
        if role.is_some_and(|r| r != current.role) && !may_set_role {
            return Err(ApiError::forbidden());
        }
        let verified = verified_field(&fields, may_set_role, current.email_verified)?;
        // Decided again inside the atomic update: a concurrent demotion must not be undone
        // by a non-admin "restating" the role they had a moment ago.
        let role = role.filter(|_| may_set_role);
        let user = state
            .store
            .update_user(
                target,
                Box::new(move |u| {
                    if let Some(name) = first_name {
                        u.first_name = name;
                    }
                    if let Some(name) = last_name {
                        u.last_name = name;
                    }
                    if let Some(role) = role {
                        u.role = role;
                    }
                    if let Some(verified) = verified {
                        u.email_verified = verified;
                        u.mail_codes.verification = None;
                    }
                    u.updated_at = crate::domain::now();
                }),
            )
            .await?;
        Ok(UserResponse::Ok(JsonView::new(UserView(Arc::new(user)))))
    }

    /// Change your password
    ///
    /// Needs the current password. Ends every other session of the user (all their other
    /// access and refresh tokens); the session making the change goes on. Only for
    /// yourself: an admin cannot set another user's password here.
    #[oai(
        path = "/users/:id/password",
        method = "put",
        operation_id = "changePassword"
    )]
    async fn change_password(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// Your own user id, or `me`.
        id: Path<String>,
        ctx: RequestCtx,
        body: JsonOrForm<ChangePasswordRequest>,
    ) -> Result<PasswordChangedResponse, ApiError> {
        let target = caller.target(&id.0)?;
        caller.authorize(CHANGE_PASSWORD, target)?;
        let me = caller.require_user()?;
        let fields = body.into_object()?;
        let current = optional_str(&fields, "current_password")?
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::bad_request("current_password missing"))?;
        let new = match optional_str(&fields, "new_password")? {
            None | Some("") => return Err(ApiError::bad_request("new_password missing")),
            Some(raw) => NewPassword::parse(SecretString::from(raw))?,
        };
        let current = SecretString::from(current);
        let keep = caller.session_id();
        match state
            .change_password(me, &current, &new, keep, &ctx.audit())
            .await?
        {
            Verdict::Ok(()) => Ok(PasswordChangedResponse::Ok(Json(Empty {}))),
            Verdict::Throttled(wait) => Err(ApiError::throttled(wait)),
            Verdict::Invalid => Err(ApiError::bad_request("current password is incorrect")),
        }
    }

    /// Delete a user
    ///
    /// Removes the account; its tokens stop working at once. Users may delete themselves;
    /// admins (`users:write`) anyone.
    #[oai(path = "/users/:id", method = "delete", operation_id = "deleteUser")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// A user id, or `me`.
        id: Path<String>,
        ctx: RequestCtx,
    ) -> Result<DeletedResponse, ApiError> {
        let target = caller.target(&id.0)?;
        caller.authorize(DELETE_USER, target)?;
        let target = target.ok_or_else(ApiError::not_found)?;
        let user = state.store.delete_user(target).await?;
        let fields = serde_json::json!({ "by": caller.label() });
        let subject = user.id.to_string();
        state
            .audit
            .record("user_deleted", Some(&subject), &ctx.audit(), fields);
        Ok(DeletedResponse::Ok(Json(Empty {})))
    }

    /// List the applications you allowed
    ///
    /// The third-party clients you allowed on the consent page (browser sign-in), with the
    /// scopes you allowed them. Your own account only (`me`).
    #[oai(
        path = "/users/:id/consents",
        method = "get",
        operation_id = "listConsents"
    )]
    async fn list_consents(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// `me`, or your own user id.
        id: Path<String>,
    ) -> Result<ConsentsResponse, ApiError> {
        let target = caller.target(&id.0)?;
        caller.authorize(LIST_CONSENTS, target)?;
        let user = caller.require_user()?;
        let mut listed = Vec::new();
        for consent in state.store.consents(user.id).await? {
            let client = state.store.client(consent.client_id).await?;
            listed.push(ConsentBody {
                client_id: consent.client_id,
                client_name: client.map(|c| c.name.as_str().to_owned()),
                scope: consent.scope.to_string(),
                granted_at: consent.granted_at,
            });
        }
        Ok(ConsentsResponse::Ok(Json(listed)))
    }

    /// Withdraw an application's consent
    ///
    /// The client will have to ask you again on its next sign-in. Tokens it already holds
    /// are not revoked by this: revoke them (`POST /api/v1/auth/revoke`) or end your
    /// sessions (`DELETE /api/v1/auth_session/logout?scope=global`).
    #[oai(
        path = "/users/:id/consents/:client_id",
        method = "delete",
        operation_id = "deleteConsent"
    )]
    async fn delete_consent(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// `me`, or your own user id.
        id: Path<String>,
        /// The client's id.
        client_id: Path<String>,
        ctx: RequestCtx,
    ) -> Result<ConsentDeletedResponse, ApiError> {
        let target = caller.target(&id.0)?;
        caller.authorize(DELETE_CONSENT, target)?;
        let user = caller.require_user()?;
        let client = Uuid::parse_str(&client_id.0).map_err(|_| ApiError::not_found())?;
        if !state.store.delete_consent(user.id, client).await? {
            return Err(ApiError::not_found());
        }
        let fields = serde_json::json!({ "client_id": client });
        state.audit.record(
            "consent_withdrawn",
            Some(&user.id.to_string()),
            &ctx.audit(),
            fields,
        );
        Ok(ConsentDeletedResponse::Ok(Json(Empty {})))
    }
}

#[derive(ApiResponse)]
pub enum ConsentDeletedResponse {
    /// Withdrawn: the client asks again next time.
    #[oai(status = 200)]
    Ok(Json<Empty>),
}

/// An application you allowed on the consent page.
#[derive(Object)]
pub struct ConsentBody {
    /// The client's id.
    pub client_id: Uuid,
    /// Its name, or null if it was deleted since.
    #[oai(nullable)]
    pub client_name: Option<String>,
    /// What you allowed it, space-separated.
    pub scope: String,
    /// When you last allowed it.
    pub granted_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum ConsentsResponse {
    /// Your consents, oldest first.
    #[oai(status = 200)]
    Ok(Json<Vec<ConsentBody>>),
}

impl poem_openapi::types::Example for NewUserRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            password: Password("correct horse battery".into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            role: None,
            email_verified: None,
        }
    }
}

impl poem_openapi::types::Example for UpdateUserRequest {
    fn example() -> Self {
        Self {
            first_name: Some("Grace".into()),
            last_name: Some("Hopper".into()),
            role: None,
            email_verified: None,
        }
    }
}

impl poem_openapi::types::Example for ChangePasswordRequest {
    fn example() -> Self {
        Self {
            current_password: Password("correct horse battery".into()),
            new_password: Password("a brand new passphrase".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::assert_same_json;
    use crate::domain::{Email, PersonName};

    fn user(first_name: Option<&str>, role: Role) -> Arc<User> {
        let mut user = User::new(
            Email::parse("Ann.O'Neil+\"x\"@example.com").unwrap(),
            "hash".into(),
            role,
            first_name.and_then(|n| PersonName::parse(n, "first_name").unwrap()),
            None,
        );
        user.created_at = DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap();
        user.updated_at = user.created_at + chrono::Duration::seconds(1);
        Arc::new(user)
    }

    #[test]
    fn user_bodies_are_sent_as_the_spec_says() {
        for u in [
            user(Some("Zoë \\ \"q\" / é"), Role::Admin),
            user(None, Role::User),
        ] {
            assert_same_json(&UserView(Arc::clone(&u)), &UserBody::from(&*u));
        }
        let both = [user(None, Role::User), user(Some("b"), Role::Admin)];
        assert_same_json(
            &both.iter().cloned().map(UserView).collect::<Vec<_>>(),
            &both
                .iter()
                .map(|u| UserBody::from(&**u))
                .collect::<Vec<_>>(),
        );
    }
}
