//! Accounts: CRUD as permissions allow, public profiles, input validation that names the
//! field, paging.

use popug_mesh::call::{all_pages, assert_field_error};
use popug_mesh::{Mesh, with_token};
use popug_proto::popug::account::v1 as pb;
use tonic::Code;

use crate::{AccountCalls, set_name, set_role, with_worker};

#[tokio::test]
async fn crud_follows_permissions() {
    let (mesh, worker) = with_worker("kesha").await;
    let admin = mesh.admin.clone();
    assert_eq!(worker.role, pb::Role::Worker as i32);
    assert!(worker.permissions.contains(&"tasks.complete".to_owned()));
    let worker_token = mesh
        .login("kesha", "kesha-password")
        .await
        .unwrap()
        .access_token;
    assert_eq!(mesh.who_am_i(&worker_token).await.unwrap().id, worker.id);

    let denied = mesh
        .create(&worker_token, "gosha", pb::Role::Worker)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = mesh
        .accounts_client()
        .list_accounts(with_token(
            &worker_token,
            pb::ListAccountsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let promote = set_role(&worker.id, pb::Role::Admin);
    let denied = mesh
        .update_account(&worker_token, promote)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Own profile: allowed.
    let rename = set_name(&worker.id, "Innokentiy");
    let renamed = mesh.update_account(&worker_token, rename).await.unwrap();
    assert_eq!(renamed.name, "Innokentiy");
    assert_eq!(renamed.version, worker.version + 1);
    // Any change of an account revokes the tokens issued before it; a new one works.
    let revoked = mesh.who_am_i(&worker_token).await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert_eq!(revoked.message(), "token revoked");
    let worker_token = mesh
        .login("kesha", "kesha-password")
        .await
        .unwrap()
        .access_token;

    // Someone else's profile: visible without the email.
    let admin_id = mesh.who_am_i(&admin).await.unwrap().id;
    let seen = mesh.get(&worker_token, &admin_id).await.unwrap();
    assert_eq!(seen.username, "admin");
    assert!(seen.email.is_empty());
    let rename_admin = set_name(&admin_id, "Evil");
    let denied = mesh
        .update_account(&worker_token, rename_admin)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Admin changes the role, then deactivates: the worker can no longer log in or refresh.
    let pair = mesh.login("kesha", "kesha-password").await.unwrap();
    let to_accountant = set_role(&worker.id, pb::Role::Accountant);
    let changed = mesh.update_account(&admin, to_accountant).await.unwrap();
    assert!(
        changed
            .permissions
            .contains(&"accounting.read_all".to_owned())
    );
    let deleted = mesh.delete_account(&admin, &worker.id).await.unwrap();
    assert!(!deleted.active);
    assert_eq!(
        mesh.login("kesha", "kesha-password")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        mesh.refresh(pair.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // An admin cannot lock themselves out.
    let status = mesh.delete_account(&admin, admin_id).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn profiles_show_names_without_private_data() {
    let (mesh, a) = with_worker("profile-a").await;
    let b = mesh
        .create(&mesh.admin, "profile-b", pb::Role::Accountant)
        .await
        .unwrap();
    let worker = mesh
        .login("profile-a", "profile-a-password")
        .await
        .unwrap()
        .access_token;
    let request = pb::ListProfilesRequest {
        ids: vec![b.id.clone(), uuid::Uuid::new_v4().to_string(), a.id.clone()],
    };
    let profiles = mesh
        .accounts_client()
        .list_profiles(with_token(&worker, request))
        .await
        .unwrap()
        .into_inner()
        .profiles;
    let names: Vec<_> = profiles.iter().map(|p| p.username.as_str()).collect();
    assert_eq!(
        names,
        ["profile-b", "profile-a"],
        "asked order, unknown left out"
    );
    assert_eq!(profiles[0].role, pb::Role::Accountant as i32);
    for bad in [vec![], vec!["nope".to_owned()]] {
        let answer = mesh
            .accounts_client()
            .list_profiles(with_token(&worker, pb::ListProfilesRequest { ids: bad }))
            .await;
        assert_field_error(answer, "ids");
    }
    let status = mesh
        .accounts_client()
        .list_profiles(pb::ListProfilesRequest { ids: vec![a.id] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let mesh = Mesh::builder().start().await;
    let admin = mesh.admin.clone();
    let client = mesh.accounts_client();
    let valid = pb::CreateAccountRequest {
        username: "valid".into(),
        name: "Va".into(),
        surname: "Lid".into(),
        email: "valid@test.example".into(),
        role: pb::Role::Worker as i32,
        password: "long-enough".into(),
        extra_permissions: vec![],
    };
    let cases: Vec<(&str, pb::CreateAccountRequest)> = vec![
        (
            "username",
            pb::CreateAccountRequest {
                username: "No Spaces".into(),
                ..valid.clone()
            },
        ),
        (
            "name",
            pb::CreateAccountRequest {
                name: " ".into(),
                ..valid.clone()
            },
        ),
        (
            "surname",
            pb::CreateAccountRequest {
                surname: "x".repeat(101),
                ..valid.clone()
            },
        ),
        (
            "email",
            pb::CreateAccountRequest {
                email: "not-an-email".into(),
                ..valid.clone()
            },
        ),
        (
            "role",
            pb::CreateAccountRequest {
                role: 0,
                ..valid.clone()
            },
        ),
        (
            "role",
            pb::CreateAccountRequest {
                role: 77,
                ..valid.clone()
            },
        ),
        (
            "password",
            pb::CreateAccountRequest {
                password: "short".into(),
                ..valid.clone()
            },
        ),
        (
            "extra_permissions",
            pb::CreateAccountRequest {
                extra_permissions: vec!["root".into()],
                ..valid.clone()
            },
        ),
    ];
    for (field, request) in cases {
        assert_field_error(
            client
                .clone()
                .create_account(with_token(&admin, request))
                .await,
            field,
        );
    }
    client
        .clone()
        .create_account(with_token(&admin, valid.clone()))
        .await
        .unwrap();
    let dup_name = client
        .clone()
        .create_account(with_token(
            &admin,
            pb::CreateAccountRequest {
                email: "other@test.example".into(),
                ..valid.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(dup_name.code(), Code::AlreadyExists);
    assert!(dup_name.message().contains("username"));
    let dup_email = client
        .clone()
        .create_account(with_token(
            &admin,
            pb::CreateAccountRequest {
                username: "other".into(),
                email: "VALID@test.example".into(),
                ..valid
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(dup_email.code(), Code::AlreadyExists);
    assert!(dup_email.message().contains("email"));

    assert_field_error(mesh.get(&admin, "nope").await, "id");
    let missing = mesh
        .get(&admin, &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let page = pb::ListAccountsRequest {
        page_size: 501,
        ..Default::default()
    };
    assert_field_error(
        client.clone().list_accounts(with_token(&admin, page)).await,
        "page_size",
    );
    let page = pb::ListAccountsRequest {
        page_token: "%%%".into(),
        ..Default::default()
    };
    assert_field_error(
        client.clone().list_accounts(with_token(&admin, page)).await,
        "page_token",
    );
}

#[tokio::test]
async fn list_pages_through_every_account_once() {
    let mesh = Mesh::builder().start().await;
    let admin = mesh.admin.clone();
    for name in ["w1", "w2", "w3", "w4"] {
        mesh.create(&admin, &format!("user{name}"), pb::Role::Worker)
            .await
            .unwrap();
    }
    let client = mesh.accounts_client();
    let seen = all_pages(|page_token| {
        let request = pb::ListAccountsRequest {
            page_size: 2,
            page_token,
            role: 0,
        };
        let mut client = client.clone();
        let request = with_token(&admin, request);
        async move {
            let page = client.list_accounts(request).await.unwrap().into_inner();
            assert!(page.accounts.len() <= 2);
            let usernames = page.accounts.into_iter().map(|a| a.username).collect();
            (usernames, page.next_page_token)
        }
    })
    .await;
    assert_eq!(seen, ["admin", "userw1", "userw2", "userw3", "userw4"]);
    let workers = client
        .clone()
        .list_accounts(with_token(
            &admin,
            pb::ListAccountsRequest {
                page_size: 0,
                page_token: String::new(),
                role: pb::Role::Worker as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(workers.accounts.len(), 4);
}
