//! Building EWS requests: the SOAP envelope with `RequestServerVersion` and,
//! under impersonation, `ExchangeImpersonation`; then each operation's body.
//! Every value is escaped (and stripped of the characters XML 1.0 cannot
//! carry) on its way in.

use std::fmt::Write;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::mailbox::{ADDIN_ID, ContactDraft, EventDraft, PRODUCT_CATEGORY};

const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const TYPES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
const MESSAGES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";

/// The `SOAPAction` of an operation.
pub(crate) fn soap_action(operation: &str) -> String {
    format!("{MESSAGES_NS}/{operation}")
}

/// The named property (in the `PublicStrings` set) that keeps the CRM
/// record's id on an item the connector wrote.
pub(crate) const CRM_ID_PROPERTY: &str = "SyncfleetCrmId";

/// The user configuration that holds the master category list.
pub(crate) const CATEGORY_LIST: &str = "CategoryList";

/// `text` escaped for XML content or an attribute, without the characters
/// XML 1.0 cannot carry (most control characters).
pub(crate) fn esc(text: &str) -> String {
    let allowed: String = text
        .chars()
        .filter(|c| matches!(c, '\t' | '\n' | '\r') || (*c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}')))
        .collect();
    quick_xml::escape::escape(allowed.as_str()).into_owned()
}

fn time(value: DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A whole request: the envelope around `body`.
pub(crate) fn envelope(server_version: &str, impersonate: Option<&str>, body: &str) -> String {
    let impersonation = impersonate
        .map(|smtp| {
            format!(
                "<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>",
                esc(smtp)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}" xmlns:t="{TYPES_NS}" xmlns:m="{MESSAGES_NS}"><soap:Header><t:RequestServerVersion Version="{}"/>{impersonation}</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#,
        esc(server_version)
    )
}

fn distinguished(id: &str) -> String {
    format!(r#"<t:DistinguishedFolderId Id="{}"/>"#, esc(id))
}

/// `SyncFolderItems` of a distinguished folder, ids only.
pub(crate) fn sync_folder_items(folder: &str, state: Option<&str>, max_changes: u16) -> String {
    let state = state
        .map(|state| format!("<m:SyncState>{}</m:SyncState>", esc(state)))
        .unwrap_or_default();
    format!(
        "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:SyncFolderId>{}</m:SyncFolderId>{state}<m:MaxChangesReturned>{max_changes}</m:MaxChangesReturned></m:SyncFolderItems>",
        distinguished(folder)
    )
}

/// `GetItem` of messages with what the sync reads, the body as text.
pub(crate) fn get_messages(ids: &[String]) -> String {
    let fields = [
        "item:Subject",
        "item:Body",
        "item:DateTimeReceived",
        "item:DateTimeSent",
        "message:From",
        "message:ToRecipients",
        "message:CcRecipients",
        "message:InternetMessageId",
    ];
    let mut out = String::from(
        "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:BodyType>Text</t:BodyType><t:AdditionalProperties>",
    );
    for field in fields {
        let _ = write!(out, r#"<t:FieldURI FieldURI="{field}"/>"#);
    }
    out.push_str("</t:AdditionalProperties></m:ItemShape><m:ItemIds>");
    for id in ids {
        let _ = write!(out, r#"<t:ItemId Id="{}"/>"#, esc(id));
    }
    out.push_str("</m:ItemIds></m:GetItem>");
    out
}

fn crm_id_uri() -> String {
    format!(
        r#"<t:ExtendedFieldURI DistinguishedPropertySetId="PublicStrings" PropertyName="{CRM_ID_PROPERTY}" PropertyType="String"/>"#
    )
}

/// The item elements every written item starts with: categories and the CRM id.
fn tagging(crm_id: &str) -> String {
    format!(
        "<t:Categories><t:String>{}</t:String></t:Categories><t:ExtendedProperty>{}<t:Value>{}</t:Value></t:ExtendedProperty>",
        esc(PRODUCT_CATEGORY),
        crm_id_uri(),
        esc(crm_id)
    )
}

fn optional(element: &str, value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("<t:{element}>{}</t:{element}>", esc(value))
    }
}

fn event_element(event: &EventDraft) -> String {
    format!(
        r#"<t:CalendarItem><t:Subject>{}</t:Subject><t:Body BodyType="Text">{}</t:Body>{}<t:Start>{}</t:Start><t:End>{}</t:End>{}</t:CalendarItem>"#,
        esc(&event.subject),
        esc(&event.body),
        tagging(&event.crm_id),
        time(event.start),
        time(event.end),
        optional("Location", &event.location)
    )
}

fn file_as(contact: &ContactDraft) -> String {
    match (contact.last_name.is_empty(), contact.first_name.is_empty()) {
        (false, false) => format!("{}, {}", contact.last_name, contact.first_name),
        (false, true) => contact.last_name.clone(),
        (true, false) => contact.first_name.clone(),
        (true, true) => contact.email.clone(),
    }
}

fn email_entry(email: &str) -> String {
    format!(
        r#"<t:EmailAddresses><t:Entry Key="EmailAddress1">{}</t:Entry></t:EmailAddresses>"#,
        esc(email)
    )
}

fn phone_entry(phone: &str) -> String {
    format!(
        r#"<t:PhoneNumbers><t:Entry Key="BusinessPhone">{}</t:Entry></t:PhoneNumbers>"#,
        esc(phone)
    )
}

fn contact_element(contact: &ContactDraft) -> String {
    let email = if contact.email.is_empty() {
        String::new()
    } else {
        email_entry(&contact.email)
    };
    let phone = if contact.phone.is_empty() {
        String::new()
    } else {
        phone_entry(&contact.phone)
    };
    format!(
        "<t:Contact>{}<t:FileAs>{}</t:FileAs>{}{}{email}{phone}{}</t:Contact>",
        tagging(&contact.crm_id),
        esc(&file_as(contact)),
        optional("GivenName", &contact.first_name),
        optional("CompanyName", &contact.company),
        optional("Surname", &contact.last_name)
    )
}

/// `CreateItem` of calendar items in the calendar, inviting nobody.
pub(crate) fn create_events(events: &[&EventDraft]) -> String {
    let items: String = events.iter().map(|event| event_element(event)).collect();
    format!(
        r#"<m:CreateItem SendMeetingInvitations="SendToNone"><m:SavedItemFolderId>{}</m:SavedItemFolderId><m:Items>{items}</m:Items></m:CreateItem>"#,
        distinguished("calendar")
    )
}

/// `CreateItem` of contacts in the contacts folder.
pub(crate) fn create_contacts(contacts: &[&ContactDraft]) -> String {
    let items: String = contacts.iter().map(|contact| contact_element(contact)).collect();
    format!(
        "<m:CreateItem><m:SavedItemFolderId>{}</m:SavedItemFolderId><m:Items>{items}</m:Items></m:CreateItem>",
        distinguished("contacts")
    )
}

/// One field of an `ItemChange`: set it to the value `content` carries in an
/// item element of type `item`, or delete it when `content` is `None`.
struct Field<'a> {
    /// `FieldURI`, `IndexedFieldURI` or `ExtendedFieldURI` element.
    uri: String,
    item: &'a str,
    content: Option<String>,
}

impl Field<'_> {
    fn write(&self, out: &mut String) {
        match &self.content {
            Some(content) => {
                let _ = write!(
                    out,
                    "<t:SetItemField>{}<t:{item}>{content}</t:{item}></t:SetItemField>",
                    self.uri,
                    item = self.item
                );
            }
            None => {
                let _ = write!(out, "<t:DeleteItemField>{}</t:DeleteItemField>", self.uri);
            }
        }
    }
}

fn uri(field: &str) -> String {
    format!(r#"<t:FieldURI FieldURI="{field}"/>"#)
}

fn indexed(field: &str, index: &str) -> String {
    format!(r#"<t:IndexedFieldURI FieldURI="{field}" FieldIndex="{index}"/>"#)
}

/// A field that is set when `value` is not empty and deleted otherwise.
fn text_field<'a>(item: &'a str, field: &str, element: &str, value: &str) -> Field<'a> {
    Field {
        uri: uri(field),
        item,
        content: (!value.is_empty()).then(|| format!("<t:{element}>{}</t:{element}>", esc(value))),
    }
}

fn tagging_fields<'a>(item: &'a str, crm_id: &str) -> [Field<'a>; 2] {
    [
        Field {
            uri: uri("item:Categories"),
            item,
            content: Some(format!(
                "<t:Categories><t:String>{}</t:String></t:Categories>",
                esc(PRODUCT_CATEGORY)
            )),
        },
        Field {
            uri: crm_id_uri(),
            item,
            content: Some(format!(
                "<t:ExtendedProperty>{}<t:Value>{}</t:Value></t:ExtendedProperty>",
                crm_id_uri(),
                esc(crm_id)
            )),
        },
    ]
}

fn item_change(id: &str, fields: &[Field<'_>]) -> String {
    let mut out = format!(r#"<t:ItemChange><t:ItemId Id="{}"/><t:Updates>"#, esc(id));
    for field in fields {
        field.write(&mut out);
    }
    out.push_str("</t:Updates></t:ItemChange>");
    out
}

/// `UpdateItem` of calendar items (id, new content), overwriting whatever
/// changed meanwhile and inviting nobody.
pub(crate) fn update_events(changes: &[(&str, &EventDraft)]) -> String {
    const ITEM: &str = "CalendarItem";
    let mut out = String::from(
        r#"<m:UpdateItem ConflictResolution="AlwaysOverwrite" SendMeetingInvitationsOrCancellations="SendToNone"><m:ItemChanges>"#,
    );
    for (id, event) in changes {
        let mut fields = vec![
            Field {
                uri: uri("item:Subject"),
                item: ITEM,
                content: Some(format!("<t:Subject>{}</t:Subject>", esc(&event.subject))),
            },
            Field {
                uri: uri("item:Body"),
                item: ITEM,
                content: Some(format!(r#"<t:Body BodyType="Text">{}</t:Body>"#, esc(&event.body))),
            },
            Field {
                uri: uri("calendar:Start"),
                item: ITEM,
                content: Some(format!("<t:Start>{}</t:Start>", time(event.start))),
            },
            Field {
                uri: uri("calendar:End"),
                item: ITEM,
                content: Some(format!("<t:End>{}</t:End>", time(event.end))),
            },
            text_field(ITEM, "calendar:Location", "Location", &event.location),
        ];
        fields.extend(tagging_fields(ITEM, &event.crm_id));
        out.push_str(&item_change(id, &fields));
    }
    out.push_str("</m:ItemChanges></m:UpdateItem>");
    out
}

/// `UpdateItem` of contacts (id, new content).
pub(crate) fn update_contacts(changes: &[(&str, &ContactDraft)]) -> String {
    const ITEM: &str = "Contact";
    let mut out = String::from(r#"<m:UpdateItem ConflictResolution="AlwaysOverwrite"><m:ItemChanges>"#);
    for (id, contact) in changes {
        let mut fields = vec![
            Field {
                uri: uri("contacts:FileAs"),
                item: ITEM,
                content: Some(format!("<t:FileAs>{}</t:FileAs>", esc(&file_as(contact)))),
            },
            text_field(ITEM, "contacts:GivenName", "GivenName", &contact.first_name),
            text_field(ITEM, "contacts:CompanyName", "CompanyName", &contact.company),
            Field {
                uri: indexed("contacts:EmailAddress", "EmailAddress1"),
                item: ITEM,
                content: (!contact.email.is_empty()).then(|| email_entry(&contact.email)),
            },
            Field {
                uri: indexed("contacts:PhoneNumber", "BusinessPhone"),
                item: ITEM,
                content: (!contact.phone.is_empty()).then(|| phone_entry(&contact.phone)),
            },
            text_field(ITEM, "contacts:Surname", "Surname", &contact.last_name),
        ];
        fields.extend(tagging_fields(ITEM, &contact.crm_id));
        out.push_str(&item_change(id, &fields));
    }
    out.push_str("</m:ItemChanges></m:UpdateItem>");
    out
}

/// `GetFolder` of a distinguished folder, ids only.
pub(crate) fn get_folder(folder: &str) -> String {
    format!(
        "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>{}</m:FolderIds></m:GetFolder>",
        distinguished(folder)
    )
}

/// `FindFolder` of the folders right under a distinguished folder, with
/// their display names.
pub(crate) fn find_child_folders(parent: &str) -> String {
    format!(
        r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="folder:DisplayName"/></t:AdditionalProperties></m:FolderShape><m:ParentFolderIds>{}</m:ParentFolderIds></m:FindFolder>"#,
        distinguished(parent)
    )
}

/// `CreateFolder` of a mail folder under a distinguished folder.
pub(crate) fn create_folder(parent: &str, display_name: &str) -> String {
    format!(
        "<m:CreateFolder><m:ParentFolderId>{}</m:ParentFolderId><m:Folders><t:Folder><t:FolderClass>IPF.Note</t:FolderClass><t:DisplayName>{}</t:DisplayName></t:Folder></m:Folders></m:CreateFolder>",
        distinguished(parent),
        esc(display_name)
    )
}

/// `DeleteFolder` of folders by id, for good.
pub(crate) fn delete_folders(ids: &[String]) -> String {
    let ids: String = ids
        .iter()
        .map(|id| format!(r#"<t:FolderId Id="{}"/>"#, esc(id)))
        .collect();
    format!(r#"<m:DeleteFolder DeleteType="HardDelete"><m:FolderIds>{ids}</m:FolderIds></m:DeleteFolder>"#)
}

fn configuration_name(name: &str, folder: &str) -> String {
    format!(
        r#"<t:UserConfigurationName Name="{}">{}</t:UserConfigurationName>"#,
        esc(name),
        distinguished(folder)
    )
}

/// `GetUserConfiguration` of a configuration's `XmlData`.
pub(crate) fn get_user_configuration(name: &str, folder: &str) -> String {
    format!(
        "<m:GetUserConfiguration>{}<m:UserConfigurationProperties>XmlData</m:UserConfigurationProperties></m:GetUserConfiguration>",
        configuration_name(name, folder)
    )
}

/// `CreateUserConfiguration` or `UpdateUserConfiguration` (`operation`) of a
/// configuration's `XmlData`.
pub(crate) fn write_user_configuration(operation: &str, name: &str, folder: &str, xml_data: &[u8]) -> String {
    format!(
        "<m:{operation}><m:UserConfiguration>{}<t:XmlData>{}</t:XmlData></m:UserConfiguration></m:{operation}>",
        configuration_name(name, folder),
        BASE64.encode(xml_data)
    )
}

/// The sidebar add-in's manifest: a mail add-in shown when reading a message,
/// its page at `source_location`.
pub(crate) fn addin_manifest(source_location: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><OfficeApp xmlns="http://schemas.microsoft.com/office/appforoffice/1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="MailApp"><Id>{ADDIN_ID}</Id><Version>1.0.0.0</Version><ProviderName>{product}</ProviderName><DefaultLocale>en-US</DefaultLocale><DisplayName DefaultValue="{product}"/><Description DefaultValue="{product}: the CRM beside your mail."/><Hosts><Host Name="Mailbox"/></Hosts><Requirements><Sets><Set Name="Mailbox" MinVersion="1.1"/></Sets></Requirements><FormSettings><Form xsi:type="ItemRead"><DesktopSettings><SourceLocation DefaultValue="{source}"/><RequestedHeight>250</RequestedHeight></DesktopSettings></Form></FormSettings><Permissions>ReadItem</Permissions><Rule xsi:type="RuleCollection" Mode="Or"><Rule xsi:type="ItemIs" ItemType="Message"/></Rule></OfficeApp>"#,
        product = esc(PRODUCT_CATEGORY),
        source = esc(source_location)
    )
}

/// `InstallApp` of a manifest.
pub(crate) fn install_app(manifest: &str) -> String {
    format!(
        "<m:InstallApp><m:Manifest>{}</m:Manifest></m:InstallApp>",
        BASE64.encode(manifest)
    )
}

/// `UninstallApp` of the add-in with `id`.
pub(crate) fn uninstall_app(id: &str) -> String {
    format!("<m:UninstallApp><m:ID>{}</m:ID></m:UninstallApp>", esc(id))
}

/// `GetAppManifests` of the mailbox's installed add-ins.
pub(crate) fn get_app_manifests() -> String {
    "<m:GetAppManifests><m:ApiVersionSupported>1.1</m:ApiVersionSupported><m:SchemaVersionSupported>1.1</m:SchemaVersionSupported></m:GetAppManifests>".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ews::parse;

    #[test]
    fn special_characters_survive_a_round_trip_through_a_request() {
        let event = EventDraft {
            crm_id: "00U\"1'".to_owned(),
            subject: "Tom & Jerry <3 \"quotes\" 'apostrophes'\u{1}".to_owned(),
            body: "a\nb".to_owned(),
            location: String::new(),
            start: DateTime::UNIX_EPOCH,
            end: DateTime::UNIX_EPOCH,
        };
        let request = envelope("Exchange2013_SP1", Some("a&b@example.test"), &create_events(&[&event]));
        let root = parse::parse(&request).unwrap();
        let item = root.find(&["Body", "CreateItem", "Items", "CalendarItem"]).unwrap();
        assert_eq!(
            item.child_text("Subject"),
            Some("Tom & Jerry <3 \"quotes\" 'apostrophes'")
        );
        assert_eq!(
            item.find(&["ExtendedProperty", "Value"])
                .map(|value| value.text.as_str()),
            Some("00U\"1'")
        );
        assert!(item.child("Location").is_none());
        assert_eq!(
            root.find(&["Header", "ExchangeImpersonation", "ConnectingSID", "PrimarySmtpAddress"])
                .map(|smtp| smtp.text.as_str()),
            Some("a&b@example.test")
        );
    }

    #[test]
    fn configuration_data_and_manifests_travel_as_padded_standard_base64() {
        let data = |request: &str| {
            let root = parse::parse(&envelope("Exchange2013_SP1", None, request)).unwrap();
            root.find(&["Body", "UpdateUserConfiguration", "UserConfiguration", "XmlData"])
                .map(|data| data.text.clone())
                .unwrap()
        };
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let request = write_user_configuration("UpdateUserConfiguration", "Name", "calendar", plain.as_bytes());
            assert_eq!(data(&request), encoded);
        }
        let bytes: Vec<u8> = (0..=255).collect();
        let request = write_user_configuration("UpdateUserConfiguration", "Name", "calendar", &bytes);
        assert_eq!(parse::base64(&data(&request)).unwrap(), bytes);

        let manifest = addin_manifest("https://addin.example.test/?a=1&b=2");
        let root = parse::parse(&envelope("Exchange2013_SP1", None, &install_app(&manifest))).unwrap();
        let sent = root.find(&["Body", "InstallApp", "Manifest"]).unwrap();
        assert_eq!(parse::base64(&sent.text).unwrap(), manifest.as_bytes());
        assert!(
            sent.text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"+/=".contains(&byte))
        );
    }
}
