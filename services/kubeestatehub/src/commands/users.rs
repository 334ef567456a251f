//! `kubeestatehub users create`: a user, with a password from the environment, generated,
//! or read from standard input.

use anyhow::Context as _;
use keh_auth::AuthError;

use crate::cli::{Settings, UsersCommand};

/// `kubeestatehub users create`.
pub(crate) async fn create_user(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    let UsersCommand::Create {
        username,
        role,
        agent_key,
        office_key,
        if_missing,
        generate_password,
    } = command;
    let role = keh_auth::Role::parse(&role)
        .ok_or_else(|| anyhow::anyhow!("--role must be admin, agent or viewer"))?;
    let mut generated = false;
    // An empty KEH_USER_PASSWORD counts as unset (compose passes `${VAR:-}` through).
    let password = match std::env::var("KEH_USER_PASSWORD")
        .map_err(|_| ())
        .and_then(|p| if p.is_empty() { Err(()) } else { Ok(p) })
    {
        Ok(password) => password,
        Err(()) if generate_password => {
            generated = true;
            keh_auth::tokens::random_secret()
        }
        Err(()) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let pool = super::database(settings, "users").await?;
    let auth = keh_auth::AuthService::new(pool, settings.auth());
    let created = auth
        .create_user(
            "cli",
            keh_auth::service::NewUser {
                username: username.clone(),
                password: password.clone(),
                role,
                agent_key,
                office_key,
            },
        )
        .await;
    match created {
        Ok(user) => {
            println!(
                "created {} user {} ({})",
                user.role, user.username, user.user_id
            );
            if generated {
                println!(
                    "sign in as {} with the password {password} (shown only now: keep it in a password manager, then change it)",
                    user.username
                );
            }
            Ok(())
        }
        Err(AuthError::UserExists(_)) if if_missing => {
            println!("user {username} exists; nothing changed");
            Ok(())
        }
        // A refused field's message names the field.
        Err(error) => Err(anyhow::anyhow!(error.to_string())),
    }
}
