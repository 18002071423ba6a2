//! Users: who places orders. Emails are normalized here so the store's unique index and
//! the aggregate agree on what "the same address" means.

use crate::aggregate::{domain_event, Aggregate};
use crate::{text, DomainError};

/// Longest accepted email address, in characters (the SMTP path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Trimmed and lowercased, then checked pragmatically: deliverability is for a confirmation
/// mail to prove, this only keeps obvious garbage out.
pub fn normalize_email(input: &str) -> Result<String, DomainError> {
    let email = input.trim().to_lowercase();
    let invalid = |reason| Err(DomainError::InvalidEmail { reason });
    if email.is_empty() {
        return invalid("it is empty");
    }
    if email.chars().count() > MAX_EMAIL_LEN {
        return invalid("it is longer than 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("it contains whitespace or control characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid("it has no '@'");
    };
    if domain.contains('@') {
        return invalid("it has more than one '@'");
    }
    if local.is_empty() {
        return invalid("nothing comes before the '@'");
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return invalid("the domain must be dot-separated names, like example.com");
    }
    Ok(email)
}

/// What can be asked of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Register { name: String, email: String },
    Rename { name: String },
    ChangeEmail { email: String },
}

domain_event! {
    /// What happened to a user; names and emails are stored already normalized.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum UserEvent {
        UserRegistered { name: String, email: String },
        UserRenamed { name: String },
        UserEmailChanged { email: String },
    }
}

/// A user's current profile; empty until registered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    profile: Option<Profile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Profile {
    name: String,
    email: String,
}

impl User {
    /// Whether the stream has been registered, i.e. anything else may be asked of it.
    pub fn exists(&self) -> bool {
        self.profile.is_some()
    }

    /// The trimmed display name; `None` before registration.
    pub fn name(&self) -> Option<&str> {
        self.profile.as_ref().map(|profile| profile.name.as_str())
    }

    /// The normalized email; `None` before registration.
    pub fn email(&self) -> Option<&str> {
        self.profile.as_ref().map(|profile| profile.email.as_str())
    }

    fn profile(&self) -> Result<&Profile, DomainError> {
        self.profile.as_ref().ok_or(DomainError::NotFound {
            stream_type: Self::STREAM_TYPE,
        })
    }
}

impl Aggregate for User {
    const STREAM_TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;

    fn handle(&self, command: UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        match command {
            UserCommand::Register { name, email } => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists {
                        stream_type: Self::STREAM_TYPE,
                    });
                }
                Ok(vec![UserEvent::UserRegistered {
                    name: text::name(&name)?,
                    email: normalize_email(&email)?,
                }])
            }
            UserCommand::Rename { name } => {
                let current = self.profile()?;
                let name = text::name(&name)?;
                Ok(if name == current.name {
                    vec![]
                } else {
                    vec![UserEvent::UserRenamed { name }]
                })
            }
            UserCommand::ChangeEmail { email } => {
                let current = self.profile()?;
                let email = normalize_email(&email)?;
                Ok(if email == current.email {
                    vec![]
                } else {
                    vec![UserEvent::UserEmailChanged { email }]
                })
            }
        }
    }

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserRegistered { name, email } => {
                self.profile = Some(Profile {
                    name: name.clone(),
                    email: email.clone(),
                });
            }
            UserEvent::UserRenamed { name } => {
                if let Some(profile) = &mut self.profile {
                    profile.name.clone_from(name);
                }
            }
            UserEvent::UserEmailChanged { email } => {
                if let Some(profile) = &mut self.profile {
                    profile.email.clone_from(email);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{assert_round_trip, given};
    use crate::DomainEvent;

    fn registered() -> UserEvent {
        UserEvent::UserRegistered {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        }
    }

    fn register(name: &str, email: &str) -> UserCommand {
        UserCommand::Register {
            name: name.into(),
            email: email.into(),
        }
    }

    #[test]
    fn registering_records_the_trimmed_name_and_normalized_email() {
        let user = given::<User>(vec![])
            .when(register("  Ada Lovelace ", " Ada@Example.COM "))
            .then_expect(vec![registered()]);
        assert!(user.exists());
        assert_eq!(user.name(), Some("Ada Lovelace"));
        assert_eq!(user.email(), Some("ada@example.com"));
    }

    #[test]
    fn registering_an_existing_user_is_rejected() {
        given::<User>(vec![registered()])
            .when(register("Ada", "other@example.com"))
            .then_error("ALREADY_EXISTS");
    }

    #[test]
    fn registering_with_a_blank_name_is_rejected() {
        given::<User>(vec![])
            .when(register("   ", "ada@example.com"))
            .then_error("INVALID_NAME");
    }

    #[test]
    fn registering_with_a_name_over_200_characters_is_rejected() {
        given::<User>(vec![])
            .when(register(&"é".repeat(201), "ada@example.com"))
            .then_error("INVALID_NAME");
    }

    #[test]
    fn a_name_of_exactly_200_characters_is_accepted() {
        let name = "é".repeat(200);
        given::<User>(vec![])
            .when(register(&name, "ada@example.com"))
            .then_expect(vec![UserEvent::UserRegistered {
                name,
                email: "ada@example.com".into(),
            }]);
    }

    #[test]
    fn registering_with_an_invalid_email_is_rejected() {
        given::<User>(vec![])
            .when(register("Ada", "ada.example.com"))
            .then_error("INVALID_EMAIL");
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email("  Ada.L+shop@Mail.Example.ORG\n").as_deref(),
            Ok("ada.l+shop@mail.example.org")
        );
    }

    #[test]
    fn malformed_emails_are_rejected_with_a_reason() {
        let too_long = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN - 11));
        for input in [
            "",
            "   ",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "ada@b@example.com",
            "ada lovelace@example.com",
            "ada@example..com",
            "ada@.example.com",
            "ada@example.com.",
            too_long.as_str(),
        ] {
            let error = normalize_email(input).unwrap_err();
            assert_eq!(error.code(), "INVALID_EMAIL", "{input:?}");
        }
    }

    #[test]
    fn an_email_of_exactly_254_characters_is_accepted() {
        let email = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN - 12));
        assert_eq!(normalize_email(&email), Ok(email));
    }

    #[test]
    fn renaming_records_the_trimmed_new_name() {
        let user = given::<User>(vec![registered()])
            .when(UserCommand::Rename {
                name: " Ada King ".into(),
            })
            .then_expect(vec![UserEvent::UserRenamed {
                name: "Ada King".into(),
            }]);
        assert_eq!(user.name(), Some("Ada King"));
    }

    #[test]
    fn renaming_to_the_current_name_records_nothing() {
        given::<User>(vec![registered()])
            .when(UserCommand::Rename {
                name: " Ada Lovelace ".into(),
            })
            .then_expect(vec![]);
    }

    #[test]
    fn renaming_an_unregistered_user_is_not_found() {
        given::<User>(vec![])
            .when(UserCommand::Rename { name: "Ada".into() })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn renaming_to_a_blank_name_is_rejected() {
        given::<User>(vec![registered()])
            .when(UserCommand::Rename { name: "".into() })
            .then_error("INVALID_NAME");
    }

    #[test]
    fn changing_the_email_records_it_normalized() {
        let user = given::<User>(vec![registered()])
            .when(UserCommand::ChangeEmail {
                email: "Ada@Analytical.Engine".into(),
            })
            .then_expect(vec![UserEvent::UserEmailChanged {
                email: "ada@analytical.engine".into(),
            }]);
        assert_eq!(user.email(), Some("ada@analytical.engine"));
    }

    #[test]
    fn changing_to_the_same_email_in_another_case_records_nothing() {
        given::<User>(vec![registered()])
            .when(UserCommand::ChangeEmail {
                email: "ADA@example.com".into(),
            })
            .then_expect(vec![]);
    }

    #[test]
    fn changing_the_email_of_an_unregistered_user_is_not_found() {
        given::<User>(vec![])
            .when(UserCommand::ChangeEmail {
                email: "ada@example.com".into(),
            })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn changing_to_an_invalid_email_is_rejected() {
        given::<User>(vec![registered()])
            .when(UserCommand::ChangeEmail {
                email: "ada@".into(),
            })
            .then_error("INVALID_EMAIL");
    }

    #[test]
    fn every_user_event_survives_storage_under_a_stable_name() {
        let events = [
            registered(),
            UserEvent::UserRenamed { name: "Ada".into() },
            UserEvent::UserEmailChanged {
                email: "ada@example.org".into(),
            },
        ];
        let names = ["UserRegistered", "UserRenamed", "UserEmailChanged"];
        assert_round_trip(&events, &names);
        assert_eq!(UserEvent::EVENT_TYPES, names);
        assert_eq!(
            registered().to_payload(),
            json!({"name": "Ada Lovelace", "email": "ada@example.com"})
        );
    }
}
