//! The product's customization of a mailbox: the Outlook master category and
//! the mail folder named [`PRODUCT_CATEGORY`], and the sidebar add-in.
//!
//! Graph has no API to install an add-in in one mailbox: real deployments go
//! through centralized deployment in the Microsoft 365 admin center. The
//! simulator keeps the add-in's state per mailbox behind a stand-in route,
//! `/v1.0/users/{mailbox}/syncfleetAddin` (`GET` the status, `POST
//! {"manifestId"}` to install, `DELETE` to remove), which this client calls;
//! against real Graph that route does not exist and the calls fail.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::client::{GRAPH, GraphClient};
use crate::{
    error::ConnectorError,
    mailbox::{ADDIN_ID, AddinStatus, PRODUCT_CATEGORY},
};

/// The color of the product's category (`preset9`: cranberry).
const CATEGORY_COLOR: &str = "preset9";

/// The add-in stand-in's path segment.
const ADDIN_SEGMENT: &str = "syncfleetAddin";

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    value: Vec<Named>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Named {
    id: String,
    #[serde(default)]
    display_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddinAnswer {
    #[serde(default)]
    status: String,
    #[serde(default)]
    manifest_id: Option<String>,
}

fn listing(body: &[u8]) -> Result<Vec<Named>, ConnectorError> {
    serde_json::from_slice::<Listing>(body)
        .map(|listing| listing.value)
        .map_err(|error| {
            ConnectorError::permanent(
                GRAPH,
                format!("unexpected listing (line {}, column {})", error.line(), error.column()),
            )
        })
}

/// `value` quoted as an OData string literal and percent-encoded for a query.
fn odata_literal(value: &str) -> String {
    let quoted = format!("'{}'", value.replace('\'', "''"));
    let mut encoded = String::with_capacity(quoted.len());
    for byte in quoted.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~'".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl GraphClient {
    /// Creates the master category; one that exists already is left as it is.
    pub(crate) async fn create_category(&self) -> Result<(), ConnectorError> {
        let url = self.users_url(&["outlook", "masterCategories"])?;
        let body = json!({"displayName": PRODUCT_CATEGORY, "color": CATEGORY_COLOR});
        self.call_tolerating(Method::POST, url, Some(&body), &[StatusCode::CONFLICT])
            .await?;
        Ok(())
    }

    /// Creates the mail folder; one that exists already is left as it is.
    pub(crate) async fn create_folder(&self) -> Result<(), ConnectorError> {
        let url = self.users_url(&["mailFolders"])?;
        let body = json!({"displayName": PRODUCT_CATEGORY});
        self.call_tolerating(Method::POST, url, Some(&body), &[StatusCode::CONFLICT])
            .await?;
        Ok(())
    }

    /// Deletes the master category, if there is one.
    pub(crate) async fn delete_category(&self) -> Result<(), ConnectorError> {
        let answer = self
            .call(Method::GET, self.users_url(&["outlook", "masterCategories"])?, None)
            .await?;
        for category in listing(&answer.body)? {
            if category.display_name.eq_ignore_ascii_case(PRODUCT_CATEGORY) {
                let url = self.users_url(&["outlook", "masterCategories", &category.id])?;
                self.call_tolerating(Method::DELETE, url, None, &[StatusCode::NOT_FOUND])
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes the mail folder, if there is one.
    pub(crate) async fn delete_folders(&self) -> Result<(), ConnectorError> {
        let mut url = self.users_url(&["mailFolders"])?;
        url.set_query(Some(&format!(
            "$filter=displayName%20eq%20{}&$select=id,displayName",
            odata_literal(PRODUCT_CATEGORY)
        )));
        let answer = self.call(Method::GET, url, None).await?;
        for folder in listing(&answer.body)? {
            let url = self.users_url(&["mailFolders", &folder.id])?;
            self.call_tolerating(Method::DELETE, url, None, &[StatusCode::NOT_FOUND])
                .await?;
        }
        Ok(())
    }

    /// Installs the add-in in the mailbox (the simulator's stand-in).
    pub(crate) async fn put_addin(&self) -> Result<(), ConnectorError> {
        let body = json!({"manifestId": ADDIN_ID});
        self.call(Method::POST, self.users_url(&[ADDIN_SEGMENT])?, Some(&body))
            .await?;
        Ok(())
    }

    /// Removes the add-in from the mailbox; not installed is fine.
    pub(crate) async fn delete_addin(&self) -> Result<(), ConnectorError> {
        self.call_tolerating(
            Method::DELETE,
            self.users_url(&[ADDIN_SEGMENT])?,
            None,
            &[StatusCode::NOT_FOUND],
        )
        .await?;
        Ok(())
    }

    /// Whether the product's add-in is installed in the mailbox.
    pub(crate) async fn read_addin(&self) -> Result<AddinStatus, ConnectorError> {
        let answer = self.call(Method::GET, self.users_url(&[ADDIN_SEGMENT])?, None).await?;
        let addin: AddinAnswer = serde_json::from_slice(&answer.body).map_err(|error| {
            ConnectorError::permanent(
                GRAPH,
                format!(
                    "unexpected add-in answer (line {}, column {})",
                    error.line(),
                    error.column()
                ),
            )
        })?;
        let ours = addin
            .manifest_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(ADDIN_ID));
        Ok(if addin.status == "installed" && ours {
            AddinStatus::Installed
        } else {
            AddinStatus::NotInstalled
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_name_is_quoted_and_encoded_for_the_filter() {
        assert_eq!(odata_literal("Syncfleet"), "'Syncfleet'");
        assert_eq!(odata_literal("O'Neil & co"), "'O''Neil%20%26%20co'");
    }
}
