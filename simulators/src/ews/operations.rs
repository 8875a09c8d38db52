//! The EWS operations on a mailbox, each reading its request element and
//! writing its response element (`m:{Operation}Response`), with Exchange's
//! per-message answers (`ResponseClass`, `ResponseCode`) and its element
//! names and order.

use std::{collections::HashSet, fmt::Write};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{
    EwsConfig, MAX_CHANGES_RETURNED, MessageSeed, Operation,
    store::{ContactData, Content, EventData, Folder, Item, Mailbox, State, SyncChange, new_id},
    xml::{Element, esc},
};

pub(crate) const MESSAGES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
pub(crate) const TYPES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/types";

/// How an operation answers.
#[derive(Debug)]
pub(crate) enum Answer {
    /// HTTP 200 with this element in the SOAP body.
    Body(String),
    /// HTTP 500 with a SOAP fault of this code.
    Fault { code: &'static str, message: String },
}

fn schema_fault(message: impl Into<String>) -> Answer {
    Answer::Fault {
        code: "ErrorSchemaValidation",
        message: format!("The request failed schema validation: {}", message.into()),
    }
}

/// The response messages of one operation.
struct Messages {
    operation: &'static str,
    out: String,
}

impl Messages {
    fn new(operation: Operation) -> Self {
        Self {
            operation: operation.as_str(),
            out: String::new(),
        }
    }

    fn success(&mut self, inner: &str) {
        let operation = self.operation;
        let _ = write!(
            self.out,
            r#"<m:{operation}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>{inner}</m:{operation}ResponseMessage>"#
        );
    }

    fn error(&mut self, code: &str, inner: &str) {
        let operation = self.operation;
        let _ = write!(
            self.out,
            r#"<m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>{}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{inner}</m:{operation}ResponseMessage>"#,
            esc(message_text(code))
        );
    }

    fn finish(self) -> Answer {
        let operation = self.operation;
        Answer::Body(format!(
            r#"<m:{operation}Response xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"><m:ResponseMessages>{}</m:ResponseMessages></m:{operation}Response>"#,
            self.out
        ))
    }
}

/// Exchange's text for a response code.
pub(crate) fn message_text(code: &str) -> &'static str {
    match code {
        "ErrorItemNotFound" => "The specified object was not found in the store.",
        "ErrorFolderExists" => "A folder with the specified name already exists.",
        "ErrorInvalidSyncStateData" => "Synchronization state data is corrupt or otherwise invalid.",
        "ErrorCalendarEndDateIsEarlierThanStartDate" => "EndDate is earlier than StartDate",
        "ErrorSendMeetingInvitationsRequired" => "SendMeetingInvitations attribute is required for Calendar items.",
        "ErrorDeleteDistinguishedFolder" => "Distinguished folders cannot be deleted.",
        "ErrorInvalidPropertySet" => "The property set is invalid for this item type.",
        "ErrorItemSave" => "A user configuration object with that name already exists.",
        "ErrorFolderNotFound" => "The specified folder could not be found in the store.",
        _ => "The request is invalid.",
    }
}

fn time(value: DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|value| value.with_timezone(&Utc))
}

fn folder_id_xml(folder: &Folder) -> String {
    format!(r#"<t:FolderId Id="{}" ChangeKey="AQAAAA=="/>"#, esc(&folder.id))
}

fn item_id_xml(item: &Item) -> String {
    format!(
        r#"<t:ItemId Id="{}" ChangeKey="{}"/>"#,
        esc(&item.id),
        esc(&item.change_key())
    )
}

/// The folder a `DistinguishedFolderId` or `FolderId` child of `parent` names.
fn folder_of<'a>(mailbox: &'a Mailbox, parent: &Element) -> Option<&'a Folder> {
    let reference = parent
        .children
        .iter()
        .find(|child| child.name == "DistinguishedFolderId" || child.name == "FolderId")?;
    folder_by_ref(mailbox, reference)
}

fn folder_by_ref<'a>(mailbox: &'a Mailbox, reference: &Element) -> Option<&'a Folder> {
    let id = reference.attribute("Id")?;
    if reference.name == "DistinguishedFolderId" {
        mailbox.folder_by_distinguished(id)
    } else {
        mailbox.folder(id)
    }
}

/// The answer of a `SyncFolderItems` whose state Exchange no longer accepts.
pub(crate) fn sync_state_refused() -> Answer {
    let mut messages = Messages::new(Operation::SyncFolderItems);
    messages.error("ErrorInvalidSyncStateData", "");
    messages.finish()
}

/// Runs `operation` on the mailbox `mailbox_key`.
pub(crate) fn handle(
    state: &mut State,
    config: &EwsConfig,
    mailbox_key: &str,
    operation: Operation,
    request: &Element,
) -> Answer {
    match operation {
        Operation::SyncFolderItems => sync_folder_items(state, config, mailbox_key, request),
        Operation::Unknown => Answer::Fault {
            code: "ErrorInvalidRequest",
            message: format!("The request is invalid: unknown operation {}.", request.name),
        },
        operation => {
            let Some(mailbox) = state.mailboxes.get_mut(mailbox_key) else {
                return Answer::Fault {
                    code: "ErrorNonExistentMailbox",
                    message: "The SMTP address has no mailbox associated with it.".to_owned(),
                };
            };
            match operation {
                Operation::GetItem => get_item(mailbox, request),
                Operation::CreateItem => create_item(mailbox, request),
                Operation::UpdateItem => update_item(mailbox, request),
                Operation::DeleteItem => delete_item(mailbox, request),
                Operation::GetFolder => get_folder(mailbox, request),
                Operation::FindFolder => find_folder(mailbox, request),
                Operation::CreateFolder => create_folder(mailbox, request),
                Operation::DeleteFolder => delete_folder(mailbox, request),
                Operation::GetUserConfiguration
                | Operation::CreateUserConfiguration
                | Operation::UpdateUserConfiguration
                | Operation::DeleteUserConfiguration => user_configuration(mailbox, operation, request),
                Operation::InstallApp => install_app(mailbox, request),
                Operation::UninstallApp => uninstall_app(mailbox, request),
                _ => get_app_manifests(mailbox, request),
            }
        }
    }
}

fn sync_folder_items(state: &mut State, config: &EwsConfig, mailbox_key: &str, request: &Element) -> Answer {
    if request.child("ItemShape").is_none() {
        return schema_fault("ItemShape is required.");
    }
    let Some(max) = request
        .child_text("MaxChangesReturned")
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|max| (1..=MAX_CHANGES_RETURNED).contains(max))
    else {
        return schema_fault("MaxChangesReturned must be an integer from 1 to 512.");
    };
    let Some(sync_folder) = request.child("SyncFolderId") else {
        return schema_fault("SyncFolderId is required.");
    };
    let mut messages = Messages::new(Operation::SyncFolderItems);
    let folder = state
        .mailboxes
        .get(mailbox_key)
        .and_then(|mailbox| folder_of(mailbox, sync_folder))
        .map(|folder| folder.id.clone());
    let Some(folder) = folder else {
        messages.error("ErrorFolderNotFound", "");
        return messages.finish();
    };
    let sync_state = request
        .child_text("SyncState")
        .map(str::trim)
        .filter(|text| !text.is_empty());
    match state.sync_folder_items(mailbox_key, &folder, sync_state, max as usize, config) {
        Ok(page) => {
            let mut changes = String::new();
            for change in &page.changes {
                match change {
                    SyncChange::Create {
                        element,
                        id,
                        change_key,
                    } => item_change(&mut changes, "Create", element, id, change_key),
                    SyncChange::Update {
                        element,
                        id,
                        change_key,
                    } => item_change(&mut changes, "Update", element, id, change_key),
                    SyncChange::Delete { id } => {
                        let _ = write!(changes, r#"<t:Delete><t:ItemId Id="{}"/></t:Delete>"#, esc(id));
                    }
                    SyncChange::ReadFlag { id, is_read } => {
                        let _ = write!(
                            changes,
                            r#"<t:ReadFlagChange><t:ItemId Id="{}"/><t:IsRead>{is_read}</t:IsRead></t:ReadFlagChange>"#,
                            esc(id)
                        );
                    }
                }
            }
            messages.success(&format!(
                "<m:SyncState>{}</m:SyncState><m:IncludesLastItemInRange>{}</m:IncludesLastItemInRange><m:Changes>{changes}</m:Changes>",
                esc(&page.state),
                page.last
            ));
        }
        Err(code) => messages.error(code, ""),
    }
    messages.finish()
}

/// A `Create` or `Update` (`kind`) of `SyncFolderItems` for the item `id`.
fn item_change(changes: &mut String, kind: &str, element: &str, id: &str, change_key: &str) {
    let _ = write!(
        changes,
        r#"<t:{kind}><t:{element}><t:ItemId Id="{}" ChangeKey="{}"/></t:{element}></t:{kind}>"#,
        esc(id),
        esc(change_key)
    );
}

/// Which properties an `ItemShape` asks for.
struct Shape {
    all: bool,
    fields: HashSet<String>,
    extended: Vec<Element>,
    html: bool,
}

impl Shape {
    fn of(request: &Element) -> Self {
        let shape = request.child("ItemShape");
        let base = shape
            .and_then(|shape| shape.child_text("BaseShape"))
            .unwrap_or("IdOnly");
        let mut fields = HashSet::new();
        let mut extended = Vec::new();
        if let Some(additional) = shape.and_then(|shape| shape.child("AdditionalProperties")) {
            for property in &additional.children {
                match property.name.as_str() {
                    "FieldURI" | "IndexedFieldURI" => {
                        if let Some(uri) = property.attribute("FieldURI") {
                            fields.insert(uri.to_owned());
                        }
                    }
                    "ExtendedFieldURI" => extended.push(property.clone()),
                    _ => {}
                }
            }
        }
        let body_type = shape.and_then(|shape| shape.child_text("BodyType")).unwrap_or("Best");
        Self {
            all: base != "IdOnly",
            fields,
            extended,
            html: body_type != "Text",
        }
    }

    fn wants(&self, uri: &str) -> bool {
        self.all || self.fields.contains(uri)
    }
}

fn mailbox_xml(address: &super::Address) -> String {
    let name = if address.name.is_empty() {
        String::new()
    } else {
        format!("<t:Name>{}</t:Name>", esc(&address.name))
    };
    format!(
        "<t:Mailbox>{name}<t:EmailAddress>{}</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType><t:MailboxType>OneOff</t:MailboxType></t:Mailbox>",
        esc(&address.address)
    )
}

/// The key an `ExtendedFieldURI` names a property by.
fn extended_key(uri: &Element) -> Option<String> {
    ["PropertyName", "PropertyTag", "PropertyId"]
        .iter()
        .find_map(|attribute| uri.attribute(attribute))
        .map(str::to_owned)
}

fn extended_uri_xml(uri: &Element) -> String {
    let attributes: String = uri
        .attributes
        .iter()
        .map(|(name, value)| format!(r#" {name}="{}""#, esc(value)))
        .collect();
    format!("<t:ExtendedFieldURI{attributes}/>")
}

fn item_xml(item: &Item, shape: &Shape) -> String {
    let element = item.content.element();
    let mut out = format!("<t:{element}>{}", item_id_xml(item));
    if shape.wants("item:Subject") {
        let _ = write!(out, "<t:Subject>{}</t:Subject>", esc(&item.subject));
    }
    if shape.wants("item:Body") {
        if shape.html {
            let _ = write!(
                out,
                r#"<t:Body BodyType="HTML">{}</t:Body>"#,
                esc(&format!("<html><body>{}</body></html>", esc(&item.body)))
            );
        } else {
            let _ = write!(out, r#"<t:Body BodyType="Text">{}</t:Body>"#, esc(&item.body));
        }
    }
    let message = match &item.content {
        Content::Message(message) => Some(&message.seed),
        _ => None,
    };
    if let Some(seed) = message
        && shape.wants("item:DateTimeReceived")
    {
        let _ = write!(out, "<t:DateTimeReceived>{}</t:DateTimeReceived>", time(seed.received));
    }
    if shape.wants("item:Categories") && !item.categories.is_empty() {
        out.push_str("<t:Categories>");
        for category in &item.categories {
            let _ = write!(out, "<t:String>{}</t:String>", esc(category));
        }
        out.push_str("</t:Categories>");
    }
    if let Some(seed) = message
        && shape.wants("item:DateTimeSent")
    {
        let _ = write!(out, "<t:DateTimeSent>{}</t:DateTimeSent>", time(seed.sent));
    }
    for uri in &shape.extended {
        if let Some(value) = extended_key(uri).and_then(|key| item.extended.get(&key)) {
            let _ = write!(
                out,
                "<t:ExtendedProperty>{}<t:Value>{}</t:Value></t:ExtendedProperty>",
                extended_uri_xml(uri),
                esc(value)
            );
        }
    }
    match &item.content {
        Content::Message(message) => message_xml(&mut out, &message.seed, item.is_read, shape),
        Content::Event(event) => event_xml(&mut out, event, shape),
        Content::Contact(contact) => contact_xml(&mut out, contact, shape),
    }
    let _ = write!(out, "</t:{element}>");
    out
}

fn message_xml(out: &mut String, seed: &MessageSeed, is_read: bool, shape: &Shape) {
    for (uri, element, recipients) in [
        ("message:ToRecipients", "ToRecipients", &seed.to),
        ("message:CcRecipients", "CcRecipients", &seed.cc),
    ] {
        if shape.wants(uri) && !recipients.is_empty() {
            let _ = write!(out, "<t:{element}>");
            for recipient in recipients {
                out.push_str(&mailbox_xml(recipient));
            }
            let _ = write!(out, "</t:{element}>");
        }
    }
    if let Some(from) = &seed.from
        && shape.wants("message:From")
    {
        let _ = write!(out, "<t:From>{}</t:From>", mailbox_xml(from));
    }
    if let Some(id) = &seed.internet_message_id
        && shape.wants("message:InternetMessageId")
    {
        let _ = write!(out, "<t:InternetMessageId>{}</t:InternetMessageId>", esc(id));
    }
    if shape.wants("message:IsRead") {
        let _ = write!(out, "<t:IsRead>{is_read}</t:IsRead>");
    }
}

fn event_xml(out: &mut String, event: &EventData, shape: &Shape) {
    if let Some(start) = event.start
        && shape.wants("calendar:Start")
    {
        let _ = write!(out, "<t:Start>{}</t:Start>", time(start));
    }
    if let Some(end) = event.end
        && shape.wants("calendar:End")
    {
        let _ = write!(out, "<t:End>{}</t:End>", time(end));
    }
    if shape.wants("calendar:Location") && !event.location.is_empty() {
        let _ = write!(out, "<t:Location>{}</t:Location>", esc(&event.location));
    }
}

fn contact_xml(out: &mut String, contact: &ContactData, shape: &Shape) {
    let texts = [
        ("contacts:FileAs", "FileAs", &contact.file_as),
        ("contacts:GivenName", "GivenName", &contact.given_name),
        ("contacts:CompanyName", "CompanyName", &contact.company),
    ];
    for (uri, element, value) in texts {
        if shape.wants(uri) && !value.is_empty() {
            let _ = write!(out, "<t:{element}>{}</t:{element}>", esc(value));
        }
    }
    if (shape.wants("contacts:EmailAddresses") || shape.wants("contacts:EmailAddress")) && !contact.email.is_empty() {
        let _ = write!(
            out,
            r#"<t:EmailAddresses><t:Entry Key="EmailAddress1">{}</t:Entry></t:EmailAddresses>"#,
            esc(&contact.email)
        );
    }
    if (shape.wants("contacts:PhoneNumbers") || shape.wants("contacts:PhoneNumber")) && !contact.phone.is_empty() {
        let _ = write!(
            out,
            r#"<t:PhoneNumbers><t:Entry Key="BusinessPhone">{}</t:Entry></t:PhoneNumbers>"#,
            esc(&contact.phone)
        );
    }
    if shape.wants("contacts:Surname") && !contact.surname.is_empty() {
        let _ = write!(out, "<t:Surname>{}</t:Surname>", esc(&contact.surname));
    }
}

fn get_item(mailbox: &Mailbox, request: &Element) -> Answer {
    let Some(ids) = request.child("ItemIds") else {
        return schema_fault("ItemIds is required.");
    };
    let shape = Shape::of(request);
    let mut messages = Messages::new(Operation::GetItem);
    for reference in ids.children_named("ItemId") {
        match reference.attribute("Id").and_then(|id| mailbox.items.get(id)) {
            Some(item) => messages.success(&format!("<m:Items>{}</m:Items>", item_xml(item, &shape))),
            None => messages.error("ErrorItemNotFound", "<m:Items/>"),
        }
    }
    messages.finish()
}

fn strings(element: Option<&Element>) -> Vec<String> {
    element
        .map(|element| {
            element
                .children_named("String")
                .map(|string| string.text.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn entry<'a>(parent: Option<&'a Element>, key: &str) -> Option<&'a str> {
    parent?
        .children_named("Entry")
        .find(|entry| entry.attribute("Key") == Some(key))
        .map(|entry| entry.text.as_str())
}

/// The extended properties an item element carries.
fn extended_of(element: &Element) -> Result<Vec<(String, String)>, &'static str> {
    element
        .children_named("ExtendedProperty")
        .map(|property| {
            let key = property
                .child("ExtendedFieldURI")
                .and_then(extended_key)
                .ok_or("ErrorInvalidPropertySet")?;
            let value = property.child_text("Value").ok_or("ErrorInvalidPropertySet")?;
            Ok((key, value.to_owned()))
        })
        .collect()
}

fn validate(item: &Item) -> Result<(), &'static str> {
    if let Content::Event(event) = &item.content {
        match (event.start, event.end) {
            (Some(start), Some(end)) if end < start => return Err("ErrorCalendarEndDateIsEarlierThanStartDate"),
            (Some(_), Some(_)) => {}
            _ => return Err("ErrorInvalidPropertySet"),
        }
    }
    Ok(())
}

/// A new item from its element in a `CreateItem` request.
fn new_item(element: &Element) -> Result<Item, &'static str> {
    let content = match element.name.as_str() {
        "CalendarItem" => {
            let time_of = |name: &str| -> Result<Option<DateTime<Utc>>, &'static str> {
                element
                    .child_text(name)
                    .map(|text| parse_time(text).ok_or("ErrorInvalidPropertySet"))
                    .transpose()
            };
            Content::Event(EventData {
                location: element.child_text("Location").unwrap_or_default().to_owned(),
                start: time_of("Start")?,
                end: time_of("End")?,
            })
        }
        "Contact" => {
            let text = |name: &str| element.child_text(name).unwrap_or_default().to_owned();
            Content::Contact(ContactData {
                given_name: text("GivenName"),
                surname: text("Surname"),
                company: text("CompanyName"),
                email: entry(element.child("EmailAddresses"), "EmailAddress1")
                    .unwrap_or_default()
                    .to_owned(),
                phone: entry(element.child("PhoneNumbers"), "BusinessPhone")
                    .unwrap_or_default()
                    .to_owned(),
                file_as: text("FileAs"),
            })
        }
        _ => return Err("ErrorInvalidRequest"),
    };
    let item = Item {
        id: String::new(),
        version: 0,
        folder: String::new(),
        subject: element.child_text("Subject").unwrap_or_default().to_owned(),
        body: element.child_text("Body").unwrap_or_default().to_owned(),
        categories: strings(element.child("Categories")),
        extended: extended_of(element)?.into_iter().collect(),
        is_read: true,
        content,
        created_seq: 0,
        content_seq: 0,
        read_seq: 0,
    };
    validate(&item)?;
    Ok(item)
}

fn create_item(mailbox: &mut Mailbox, request: &Element) -> Answer {
    let Some(items) = request.child("Items") else {
        return schema_fault("Items is required.");
    };
    let saved_in = request
        .child("SavedItemFolderId")
        .map(|saved| folder_of(mailbox, saved).map(|folder| folder.id.clone()));
    let invitations = request.attribute("SendMeetingInvitations");
    let mut messages = Messages::new(Operation::CreateItem);
    for element in &items.children {
        if element.name == "CalendarItem" && invitations.is_none() {
            messages.error("ErrorSendMeetingInvitationsRequired", "<m:Items/>");
            continue;
        }
        let default_folder = match element.name.as_str() {
            "CalendarItem" => "calendar",
            "Contact" => "contacts",
            _ => "drafts",
        };
        let folder = match &saved_in {
            Some(Some(folder)) => Some(folder.clone()),
            Some(None) => None,
            None => mailbox
                .folder_by_distinguished(default_folder)
                .map(|folder| folder.id.clone()),
        };
        let Some(folder) = folder else {
            messages.error("ErrorFolderNotFound", "<m:Items/>");
            continue;
        };
        match new_item(element) {
            Ok(item) => {
                let id = mailbox.insert(folder, item);
                let written = &mailbox.items[&id];
                messages.success(&format!(
                    "<m:Items><t:{0}>{1}</t:{0}></m:Items>",
                    element.name,
                    item_id_xml(written)
                ));
            }
            Err(code) => messages.error(code, "<m:Items/>"),
        }
    }
    messages.finish()
}

/// The element in a `SetItemField` that carries the new value.
fn value_element(change: &Element) -> Option<&Element> {
    change
        .children
        .iter()
        .find(|child| !matches!(child.name.as_str(), "FieldURI" | "IndexedFieldURI" | "ExtendedFieldURI"))
}

/// Applies one `SetItemField`, `AppendToItemField` or `DeleteItemField`.
fn apply(item: &mut Item, change: &Element) -> Result<(), &'static str> {
    const INVALID: &str = "ErrorInvalidPropertySet";
    let delete = change.name == "DeleteItemField";
    let value = if delete {
        None
    } else {
        Some(value_element(change).ok_or(INVALID)?)
    };
    if let Some(uri) = change.child("ExtendedFieldURI") {
        let key = extended_key(uri).ok_or(INVALID)?;
        match value {
            None => {
                item.extended.remove(&key);
            }
            Some(value) => {
                let (_, text) = extended_of(value)?.into_iter().next().ok_or(INVALID)?;
                item.extended.insert(key, text);
            }
        }
        return Ok(());
    }
    let (uri, index) = if let Some(uri) = change.child("FieldURI") {
        (uri.attribute("FieldURI").ok_or(INVALID)?, None)
    } else {
        let uri = change.child("IndexedFieldURI").ok_or(INVALID)?;
        (
            uri.attribute("FieldURI").ok_or(INVALID)?,
            Some(uri.attribute("FieldIndex").ok_or(INVALID)?),
        )
    };
    let text = |name: &str| -> Result<String, &'static str> {
        match value {
            None => Ok(String::new()),
            Some(value) => value.child_text(name).map(str::to_owned).ok_or(INVALID),
        }
    };
    match (uri, &mut item.content) {
        ("item:Subject", _) => item.subject = text("Subject")?,
        ("item:Body", _) => item.body = text("Body")?,
        ("item:Categories", _) => {
            let mut categories = strings(value.and_then(|value| value.child("Categories")));
            if change.name == "AppendToItemField" {
                item.categories.append(&mut categories);
            } else {
                item.categories = categories;
            }
        }
        ("calendar:Start", Content::Event(event)) => {
            event.start = Some(parse_time(&text("Start")?).ok_or(INVALID)?);
        }
        ("calendar:End", Content::Event(event)) => event.end = Some(parse_time(&text("End")?).ok_or(INVALID)?),
        ("calendar:Location", Content::Event(event)) => event.location = text("Location")?,
        ("contacts:GivenName", Content::Contact(contact)) => contact.given_name = text("GivenName")?,
        ("contacts:Surname", Content::Contact(contact)) => contact.surname = text("Surname")?,
        ("contacts:CompanyName", Content::Contact(contact)) => contact.company = text("CompanyName")?,
        ("contacts:FileAs", Content::Contact(contact)) => contact.file_as = text("FileAs")?,
        ("contacts:EmailAddress", Content::Contact(contact)) if index == Some("EmailAddress1") => {
            contact.email = match value {
                None => String::new(),
                Some(value) => entry(value.child("EmailAddresses"), "EmailAddress1")
                    .ok_or(INVALID)?
                    .to_owned(),
            };
        }
        ("contacts:PhoneNumber", Content::Contact(contact)) if index == Some("BusinessPhone") => {
            contact.phone = match value {
                None => String::new(),
                Some(value) => entry(value.child("PhoneNumbers"), "BusinessPhone")
                    .ok_or(INVALID)?
                    .to_owned(),
            };
        }
        _ => return Err(INVALID),
    }
    Ok(())
}

fn update_item(mailbox: &mut Mailbox, request: &Element) -> Answer {
    let Some(changes) = request.child("ItemChanges") else {
        return schema_fault("ItemChanges is required.");
    };
    let mut messages = Messages::new(Operation::UpdateItem);
    for change in changes.children_named("ItemChange") {
        let id = change
            .child("ItemId")
            .and_then(|id| id.attribute("Id"))
            .unwrap_or_default();
        let Some(mut item) = mailbox.items.get(id).cloned() else {
            messages.error("ErrorItemNotFound", "<m:Items/>");
            continue;
        };
        let updates = change
            .child("Updates")
            .map(|updates| updates.children.as_slice())
            .unwrap_or(&[]);
        let applied = updates
            .iter()
            .try_for_each(|update| apply(&mut item, update))
            .and_then(|()| validate(&item));
        match applied {
            Ok(()) => {
                let element = item.content.element();
                mailbox.items.insert(id.to_owned(), item);
                mailbox.touch(id);
                let written = &mailbox.items[id];
                messages.success(&format!(
                    "<m:Items><t:{element}>{}</t:{element}></m:Items><m:ConflictResults><t:Count>0</t:Count></m:ConflictResults>",
                    item_id_xml(written)
                ));
            }
            Err(code) => messages.error(code, "<m:Items/>"),
        }
    }
    messages.finish()
}

fn delete_item(mailbox: &mut Mailbox, request: &Element) -> Answer {
    let Some(ids) = request.child("ItemIds") else {
        return schema_fault("ItemIds is required.");
    };
    let mut messages = Messages::new(Operation::DeleteItem);
    for reference in ids.children_named("ItemId") {
        if mailbox.remove(reference.attribute("Id").unwrap_or_default()) {
            messages.success("");
        } else {
            messages.error("ErrorItemNotFound", "");
        }
    }
    messages.finish()
}

fn folder_element(folder: &Folder) -> &'static str {
    match folder.class.as_str() {
        "IPF.Appointment" => "CalendarFolder",
        "IPF.Contact" => "ContactsFolder",
        _ => "Folder",
    }
}

fn folder_xml(mailbox: &Mailbox, folder: &Folder) -> String {
    let element = folder_element(folder);
    let total = mailbox.items.values().filter(|item| item.folder == folder.id).count();
    let unread = mailbox
        .items
        .values()
        .filter(|item| item.folder == folder.id && !item.is_read)
        .count();
    let children = mailbox
        .folders
        .iter()
        .filter(|child| child.parent.as_deref() == Some(folder.id.as_str()))
        .count();
    let parent = folder
        .parent
        .as_ref()
        .map(|parent| format!(r#"<t:ParentFolderId Id="{}" ChangeKey="AQAAAA=="/>"#, esc(parent)))
        .unwrap_or_default();
    let unread = if element == "Folder" {
        format!("<t:UnreadCount>{unread}</t:UnreadCount>")
    } else {
        String::new()
    };
    format!(
        "<t:{element}>{}{parent}<t:FolderClass>{}</t:FolderClass><t:DisplayName>{}</t:DisplayName><t:TotalCount>{total}</t:TotalCount><t:ChildFolderCount>{children}</t:ChildFolderCount>{unread}</t:{element}>",
        folder_id_xml(folder),
        esc(&folder.class),
        esc(&folder.display_name)
    )
}

fn get_folder(mailbox: &Mailbox, request: &Element) -> Answer {
    let Some(ids) = request.child("FolderIds") else {
        return schema_fault("FolderIds is required.");
    };
    let mut messages = Messages::new(Operation::GetFolder);
    for reference in &ids.children {
        match folder_by_ref(mailbox, reference) {
            Some(folder) => messages.success(&format!("<m:Folders>{}</m:Folders>", folder_xml(mailbox, folder))),
            None => messages.error("ErrorItemNotFound", ""),
        }
    }
    messages.finish()
}

/// The folders under `parent`: its children, or every descendant when `deep`.
fn folders_under<'a>(mailbox: &'a Mailbox, parent: &str, deep: bool, found: &mut Vec<&'a Folder>) {
    for folder in mailbox
        .folders
        .iter()
        .filter(|folder| folder.parent.as_deref() == Some(parent))
    {
        found.push(folder);
        if deep {
            folders_under(mailbox, &folder.id, true, found);
        }
    }
}

fn find_folder(mailbox: &Mailbox, request: &Element) -> Answer {
    let Some(parents) = request.child("ParentFolderIds") else {
        return schema_fault("ParentFolderIds is required.");
    };
    let deep = request.attribute("Traversal") == Some("Deep");
    let mut messages = Messages::new(Operation::FindFolder);
    for reference in &parents.children {
        let Some(parent) = folder_by_ref(mailbox, reference) else {
            messages.error("ErrorItemNotFound", "");
            continue;
        };
        let mut found = Vec::new();
        folders_under(mailbox, &parent.id, deep, &mut found);
        let folders: String = found.iter().map(|folder| folder_xml(mailbox, folder)).collect();
        messages.success(&format!(
            r#"<m:RootFolder TotalItemsInView="{}" IncludesLastItemInRange="true"><t:Folders>{folders}</t:Folders></m:RootFolder>"#,
            found.len()
        ));
    }
    messages.finish()
}

fn create_folder(mailbox: &mut Mailbox, request: &Element) -> Answer {
    let (Some(parent), Some(folders)) = (request.child("ParentFolderId"), request.child("Folders")) else {
        return schema_fault("ParentFolderId and Folders are required.");
    };
    let mut messages = Messages::new(Operation::CreateFolder);
    let Some(parent) = folder_of(mailbox, parent).map(|folder| folder.id.clone()) else {
        for _ in &folders.children {
            messages.error("ErrorItemNotFound", "");
        }
        return messages.finish();
    };
    for new in &folders.children {
        let display_name = new.child_text("DisplayName").unwrap_or_default().to_owned();
        let exists = mailbox.folders.iter().any(|folder| {
            folder.parent.as_deref() == Some(parent.as_str()) && folder.display_name.eq_ignore_ascii_case(&display_name)
        });
        if display_name.is_empty() {
            messages.error("ErrorInvalidRequest", "");
            continue;
        }
        if exists {
            messages.error("ErrorFolderExists", "");
            continue;
        }
        let class = new.child_text("FolderClass").map(str::to_owned).unwrap_or_else(|| {
            match new.name.as_str() {
                "CalendarFolder" => "IPF.Appointment",
                "ContactsFolder" => "IPF.Contact",
                _ => "IPF.Note",
            }
            .to_owned()
        });
        let folder = Folder {
            id: new_id("AQMkA"),
            distinguished: None,
            display_name,
            class,
            parent: Some(parent.clone()),
        };
        let element = folder_element(&folder);
        messages.success(&format!(
            "<m:Folders><t:{element}>{}</t:{element}></m:Folders>",
            folder_id_xml(&folder)
        ));
        mailbox.folders.push(folder);
    }
    messages.finish()
}

fn delete_folder(mailbox: &mut Mailbox, request: &Element) -> Answer {
    let Some(ids) = request.child("FolderIds") else {
        return schema_fault("FolderIds is required.");
    };
    let mut messages = Messages::new(Operation::DeleteFolder);
    for reference in &ids.children {
        let Some(folder) = folder_by_ref(mailbox, reference).cloned() else {
            messages.error("ErrorItemNotFound", "");
            continue;
        };
        if folder.distinguished.is_some() {
            messages.error("ErrorDeleteDistinguishedFolder", "");
            continue;
        }
        let mut doomed = vec![&folder];
        folders_under(mailbox, &folder.id, true, &mut doomed);
        let doomed: HashSet<String> = doomed.into_iter().map(|folder| folder.id.clone()).collect();
        let items: Vec<String> = mailbox
            .items
            .values()
            .filter(|item| doomed.contains(&item.folder))
            .map(|item| item.id.clone())
            .collect();
        for id in items {
            mailbox.remove(&id);
        }
        mailbox.folders.retain(|folder| !doomed.contains(&folder.id));
        mailbox.configurations.retain(|(folder, _), _| !doomed.contains(folder));
        messages.success("");
    }
    messages.finish()
}

fn user_configuration(mailbox: &mut Mailbox, operation: Operation, request: &Element) -> Answer {
    let configuration = request.child("UserConfiguration");
    let name_element = configuration
        .and_then(|configuration| configuration.child("UserConfigurationName"))
        .or_else(|| request.child("UserConfigurationName"));
    let Some(name_element) = name_element else {
        return schema_fault("UserConfigurationName is required.");
    };
    let Some(name) = name_element.attribute("Name").map(str::to_owned) else {
        return schema_fault("UserConfigurationName needs a Name.");
    };
    let mut messages = Messages::new(operation);
    let Some(folder) = folder_of(mailbox, name_element).map(|folder| folder.id.clone()) else {
        messages.error("ErrorItemNotFound", "");
        return messages.finish();
    };
    let key = (folder.clone(), name.clone());
    let xml_data = match configuration.and_then(|configuration| configuration.child_text("XmlData")) {
        None => None,
        Some(text) => match STANDARD.decode(text.trim()) {
            Ok(bytes) => Some(bytes),
            Err(_) => return schema_fault("XmlData is not base64."),
        },
    };
    let exists = mailbox.configurations.contains_key(&key);
    match operation {
        Operation::GetUserConfiguration => match mailbox.configurations.get(&key) {
            Some(data) => {
                let properties = request.child_text("UserConfigurationProperties").unwrap_or("All");
                let wanted = properties
                    .split_whitespace()
                    .any(|property| property == "All" || property == "XmlData");
                let data = match data {
                    Some(data) if wanted => format!("<t:XmlData>{}</t:XmlData>", STANDARD.encode(data)),
                    _ => String::new(),
                };
                messages.success(&format!(
                    r#"<m:UserConfiguration><t:UserConfigurationName Name="{}"><t:FolderId Id="{}"/></t:UserConfigurationName>{data}</m:UserConfiguration>"#,
                    esc(&name),
                    esc(&folder)
                ));
            }
            None => messages.error("ErrorItemNotFound", ""),
        },
        Operation::CreateUserConfiguration if exists => messages.error("ErrorItemSave", ""),
        Operation::CreateUserConfiguration => {
            mailbox.configurations.insert(key, xml_data);
            messages.success("");
        }
        Operation::UpdateUserConfiguration if exists => {
            if xml_data.is_some() {
                mailbox.configurations.insert(key, xml_data);
            }
            messages.success("");
        }
        Operation::DeleteUserConfiguration if exists => {
            mailbox.configurations.remove(&key);
            messages.success("");
        }
        _ => messages.error("ErrorItemNotFound", ""),
    }
    messages.finish()
}

/// A top-level answer of the add-in operations, which carry their
/// `ResponseClass` on the response element itself.
fn app_answer(operation: Operation, error: Option<(&str, &str)>, inner: &str) -> Answer {
    let operation = operation.as_str();
    let status = match error {
        None => r#" ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>"#.to_owned(),
        Some((code, text)) => format!(
            r#" ResponseClass="Error"><m:MessageText>{}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"#,
            esc(text)
        ),
    };
    Answer::Body(format!(
        r#"<m:{operation}Response xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"{status}{inner}</m:{operation}Response>"#
    ))
}

/// The `Id` of an add-in manifest.
fn manifest_id(manifest: &[u8]) -> Option<String> {
    let root = super::xml::parse(std::str::from_utf8(manifest).ok()?).ok()?;
    (root.name == "OfficeApp")
        .then(|| root.child_text("Id"))
        .flatten()
        .map(|id| id.trim().to_lowercase())
        .filter(|id| !id.is_empty())
}

fn install_app(mailbox: &mut Mailbox, request: &Element) -> Answer {
    let manifest = request
        .child_text("Manifest")
        .and_then(|text| STANDARD.decode(text.trim()).ok());
    let Some(manifest) = manifest else {
        return app_answer(
            Operation::InstallApp,
            Some(("ErrorInvalidRequest", "The manifest is not base64.")),
            "",
        );
    };
    let Some(id) = manifest_id(&manifest) else {
        return app_answer(
            Operation::InstallApp,
            Some(("ErrorInvalidRequest", "The manifest is not a valid add-in manifest.")),
            "",
        );
    };
    mailbox.apps.insert(id, manifest);
    app_answer(Operation::InstallApp, None, "")
}

fn uninstall_app(mailbox: &mut Mailbox, request: &Element) -> Answer {
    let Some(id) = request.child_text("ID") else {
        return schema_fault("ID is required.");
    };
    mailbox.apps.remove(&id.trim().to_lowercase());
    app_answer(Operation::UninstallApp, None, "")
}

fn get_app_manifests(mailbox: &Mailbox, request: &Element) -> Answer {
    let apps = request.child("ApiVersionSupported").is_some();
    let mut inner = String::new();
    if apps {
        inner.push_str("<m:Apps>");
        for manifest in mailbox.apps.values() {
            let _ = write!(
                inner,
                "<t:App><t:Metadata><t:EndNodeUrl/><t:ActionUrl/><t:AppStatus>Enabled</t:AppStatus></t:Metadata><t:Manifest>{}</t:Manifest></t:App>",
                STANDARD.encode(manifest)
            );
        }
        inner.push_str("</m:Apps>");
    } else {
        inner.push_str("<m:Manifests>");
        for manifest in mailbox.apps.values() {
            let _ = write!(inner, "<t:Manifest>{}</t:Manifest>", STANDARD.encode(manifest));
        }
        inner.push_str("</m:Manifests>");
    }
    app_answer(Operation::GetAppManifests, None, &inner)
}
