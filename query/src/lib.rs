//! The GraphQL query service over the read models.
