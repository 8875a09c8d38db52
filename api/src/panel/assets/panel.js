// The admin panel's one script: column hiding (kept in localStorage),
// confirmations, copy buttons, user actions (single and bulk) with a
// notification per action at the bottom left, push progress polling, the
// console pages' auto-refresh.
// Every page works for reading without it; changes go through forms or
// fetch() calls carrying the CSRF token.
(function () {
  'use strict';
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : '';

  function toast(text, ok) {
    var box = document.getElementById('toasts');
    if (!box) { return; }
    var item = document.createElement('div');
    item.className = 'toast ' + (ok ? 'ok' : 'fail');
    item.setAttribute('role', ok ? 'status' : 'alert');
    item.textContent = text;
    var close = document.createElement('button');
    close.type = 'button';
    close.textContent = '×';
    close.setAttribute('aria-label', 'Dismiss');
    close.addEventListener('click', function () { item.remove(); });
    item.prepend(close);
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 20000);
  }

  // Notifications that outlive the reload after an action.
  try {
    var pending = JSON.parse(sessionStorage.getItem('sf-toasts') || '[]');
    sessionStorage.removeItem('sf-toasts');
    pending.forEach(function (entry) { toast(entry.text, entry.ok); });
  } catch (ignored) { /* storage unavailable */ }

  function keep(text, ok) {
    try {
      var list = JSON.parse(sessionStorage.getItem('sf-toasts') || '[]');
      list.push({ text: text, ok: ok });
      sessionStorage.setItem('sf-toasts', JSON.stringify(list));
    } catch (ignored) { toast(text, ok); }
  }

  // Columns: hidden ones per table, defaults from the headers.
  document.querySelectorAll('table[data-table]').forEach(function (table) {
    var name = table.getAttribute('data-table');
    var key = 'sf-cols-' + name;
    var hidden;
    try { hidden = JSON.parse(localStorage.getItem(key)); } catch (ignored) { hidden = null; }
    if (!Array.isArray(hidden)) {
      hidden = Array.prototype.map.call(table.querySelectorAll('th[data-default-hidden]'), function (th) { return th.getAttribute('data-col'); });
    }
    function apply() {
      table.querySelectorAll('[data-col]').forEach(function (cell) {
        cell.classList.toggle('col-hidden', hidden.indexOf(cell.getAttribute('data-col')) >= 0);
      });
      document.querySelectorAll('details.colchooser[data-for="' + name + '"] input[data-toggle-col]').forEach(function (box) {
        box.checked = hidden.indexOf(box.getAttribute('data-toggle-col')) < 0;
      });
      try { localStorage.setItem(key, JSON.stringify(hidden)); } catch (ignored) { /* not kept */ }
    }
    function set(col, visible) {
      hidden = hidden.filter(function (c) { return c !== col; });
      if (!visible) { hidden.push(col); }
      apply();
    }
    table.querySelectorAll('button[data-hide-col]').forEach(function (button) {
      button.addEventListener('click', function () { set(button.getAttribute('data-hide-col'), false); });
    });
    document.querySelectorAll('details.colchooser[data-for="' + name + '"] input[data-toggle-col]').forEach(function (box) {
      box.addEventListener('change', function () { set(box.getAttribute('data-toggle-col'), box.checked); });
    });
    apply();
  });

  // The organization form: the fields of the chosen access type only.
  var accessType = document.querySelector('select[data-access-type]');
  if (accessType) {
    var showFor = function () {
      document.querySelectorAll('[data-for-access]').forEach(function (block) {
        var on = block.getAttribute('data-for-access').split(' ').indexOf(accessType.value) >= 0;
        block.hidden = !on;
        block.querySelectorAll('input').forEach(function (input) { input.disabled = !on; });
      });
    };
    accessType.addEventListener('change', showFor);
    showFor();
  }

  // Forms and buttons that ask first. "{n}" in the question is the number
  // of rows selected in the form (none selected: nothing to ask). A form
  // with a "confirmed" field is told the answer, so its page does not ask
  // again (without the script, it does).
  function asked(form, question) {
    if (question.indexOf('{n}') >= 0) {
      var selected = form ? form.querySelectorAll('input[data-select]:checked').length : 0;
      if (selected === 0) { toast('Select at least one row first.', false); return false; }
      question = question.replace('{n}', selected);
    }
    if (!window.confirm(question)) { return false; }
    var mark = form ? form.querySelector('input[name="confirmed"]') : null;
    if (mark) { mark.value = 'yes'; }
    return true;
  }
  document.querySelectorAll('form[data-confirm]').forEach(function (form) {
    form.addEventListener('submit', function (event) {
      if (!asked(form, form.getAttribute('data-confirm'))) { event.preventDefault(); }
    });
  });
  document.querySelectorAll('form button[type="submit"][data-confirm]').forEach(function (button) {
    button.addEventListener('click', function (event) {
      if (!asked(button.form, button.getAttribute('data-confirm'))) { event.preventDefault(); }
    });
  });

  // A menu inside a scrolling table would be clipped by it: an open menu is
  // placed against the window instead, under its summary; opening one
  // closes the others.
  document.querySelectorAll('details').forEach(function (details) {
    details.addEventListener('toggle', function () {
      var menu = details.querySelector('.menu');
      if (!details.open || !menu) { return; }
      document.querySelectorAll('details[open]').forEach(function (other) {
        if (other !== details && !other.contains(details)) { other.removeAttribute('open'); }
      });
      if (!details.closest('.scroll') || window.matchMedia('(max-width: 720px)').matches) { return; }
      var rect = details.querySelector('summary').getBoundingClientRect();
      menu.classList.add('placed');
      var width = menu.offsetWidth;
      var height = menu.offsetHeight;
      menu.style.left = Math.max(8, Math.min(rect.left, window.innerWidth - width - 8)) + 'px';
      var below = rect.bottom + 2;
      menu.style.top = (below + height > window.innerHeight ? Math.max(8, rect.top - height - 2) : below) + 'px';
    });
  });

  // Escape closes an open menu and gives focus back to its summary.
  document.addEventListener('keydown', function (event) {
    if (event.key !== 'Escape') { return; }
    document.querySelectorAll('details[open]').forEach(function (open) {
      open.removeAttribute('open');
      var summary = open.querySelector('summary');
      if (summary && open.contains(document.activeElement)) { summary.focus(); }
    });
  });

  // Keyset pages go forward; the previous page is the one the browser came
  // from.
  document.querySelectorAll('button[data-back]').forEach(function (button) {
    button.addEventListener('click', function () { window.history.back(); });
  });

  // Copy buttons.
  document.querySelectorAll('button[data-copy]').forEach(function (button) {
    button.addEventListener('click', function () {
      var target = document.getElementById(button.getAttribute('data-copy'));
      if (!target) { return; }
      var value = 'value' in target && target.value !== undefined ? target.value : target.textContent;
      var done = function () { toast('Copied.', true); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(value).then(done, function () { toast('Copy failed: select the text and copy it.', false); });
      } else if (target.select) {
        target.select(); document.execCommand('copy'); done();
      }
    });
  });

  // Text downloads (an activity's log).
  document.querySelectorAll('button[data-download-text]').forEach(function (button) {
    button.addEventListener('click', function () {
      var source = document.getElementById(button.getAttribute('data-download-text'));
      var link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([source ? source.textContent : ''], { type: 'text/plain' }));
      link.download = button.getAttribute('data-filename') || 'activity.log';
      document.body.appendChild(link); link.click(); link.remove();
    });
  });

  // Row selection.
  var selectAll = document.querySelector('input[data-select-all]');
  var boxes = function () { return Array.prototype.slice.call(document.querySelectorAll('input[data-select]')); };
  if (selectAll) {
    selectAll.addEventListener('change', function () { boxes().forEach(function (box) { box.checked = selectAll.checked; }); });
  }

  function describe(answer, names) {
    if (answer.error) { return { text: answer.action + ' failed: ' + answer.error, ok: false }; }
    var results = answer.results || [];
    var failed = results.filter(function (item) { return !item.ok; });
    var who = function (item) { return names[item.user_id] || item.user_id; };
    if (failed.length === 0) {
      var queued = results.some(function (item) { return item.job_id; });
      return { text: answer.action + ': succeeded for ' + results.length + (results.length === 1 ? ' user' : ' users') + (queued ? ' (queued)' : '') + '.', ok: true };
    }
    var reasons = failed.map(function (item) { return who(item) + ': ' + (item.error ? item.error.message : 'failed'); }).join('; ');
    return { text: answer.action + ': ' + (results.length - failed.length) + ' succeeded, ' + failed.length + ' failed. ' + reasons, ok: false };
  }

  // The actions menus: one user's (data-user) or the selection's; a group
  // of buttons (data-bulk-actions) acts on the selection too.
  document.querySelectorAll('details.actions, [data-bulk-actions]').forEach(function (menu) {
    menu.querySelectorAll('button[data-action]').forEach(function (button) {
      button.addEventListener('click', function () {
        var names = {};
        var ids;
        if (menu.hasAttribute('data-user')) {
          ids = [menu.getAttribute('data-user')];
          names[ids[0]] = menu.getAttribute('data-name');
        } else {
          var chosen = boxes().filter(function (box) { return box.checked; });
          ids = chosen.map(function (box) { names[box.getAttribute('data-select')] = box.getAttribute('data-name'); return box.getAttribute('data-select'); });
        }
        if (ids.length === 0) { toast('Select at least one user first.', false); return; }
        var label = button.textContent.trim();
        var confirmText = button.getAttribute('data-confirm');
        if (confirmText && !window.confirm(confirmText + ': ' + ids.length + (ids.length === 1 ? ' user' : ' users') + '?')) { return; }
        var body = { user_ids: ids };
        var param = button.parentElement.querySelector('select[data-param]');
        if (param) { body[param.getAttribute('data-param')] = param.value; }
        menu.removeAttribute('open');
        fetch('/panel/actions/' + button.getAttribute('data-action'), {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
          body: JSON.stringify(body)
        }).then(function (response) {
          // A session that ended sends to the sign-in page.
          if (response.redirected) { window.location.assign(response.url); return new Promise(function () {}); }
          return response.json().catch(function () { return { action: label, error: 'the panel answered ' + response.status }; });
        }).then(function (answer) {
          var shown = describe(answer, names);
          var deleted = /delete/.test(button.getAttribute('data-action')) && shown.ok && menu.hasAttribute('data-user') && !document.querySelector('table[data-table="users"]');
          keep(shown.text, shown.ok);
          if (deleted) { window.location.assign('/panel/users'); } else { window.location.reload(); }
        }, function (error) { toast(label + ' failed: ' + error, false); });
      });
    });
  });

  // Push page: the count on the "{N} Selected users" button, "Select all".
  var pushForm = document.querySelector('form[data-push-form]');
  if (pushForm) {
    var pushBoxes = Array.prototype.slice.call(pushForm.querySelectorAll('input[data-push-user]'));
    var countButton = pushForm.querySelector('[data-selected-count]');
    var all = pushForm.querySelector('input[data-select-all-push]');
    var count = function () {
      var n = pushBoxes.filter(function (box) { return box.checked; }).length;
      countButton.textContent = n + ' Selected users';
      countButton.disabled = n === 0;
    };
    pushBoxes.forEach(function (box) { box.addEventListener('change', count); });
    if (all) { all.addEventListener('change', function () { pushBoxes.forEach(function (box) { box.checked = all.checked; }); count(); }); }
    count();
  }

  // Console pages reload themselves every data-refresh seconds, but not
  // while the admin works on the page (rows selected, a menu or the
  // numbers open, a field focused) or looks at another tab: then a little
  // later.
  var live = document.querySelector('[data-refresh]');
  if (live) {
    var seconds = parseInt(live.getAttribute('data-refresh'), 10) || 30;
    var state = live.querySelector('[data-refresh-state]');
    var busy = function () {
      var focused = document.activeElement;
      return document.hidden ||
        document.querySelector('input[data-select]:checked, details[open]') !== null ||
        (focused !== null && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName));
    };
    var reload = function () {
      if (busy()) {
        if (state) { state.textContent = 'Refresh held while you work on the page'; }
        setTimeout(reload, 2000);
        return;
      }
      window.location.reload();
    };
    setTimeout(reload, seconds * 1000);
  }

  // Push progress: poll until finished.
  var poll = document.querySelector('[data-poll]');
  if (poll) {
    var url = poll.getAttribute('data-poll');
    var tick = function () {
      fetch(url, { credentials: 'same-origin' }).then(function (r) { return r.json(); }).then(function (push) {
        ['status', 'total', 'applied', 'failed', 'pending', 'finished_at'].forEach(function (field) {
          var cell = poll.querySelector('[data-field="' + field + '"]');
          if (cell) { cell.textContent = push[field]; }
        });
        var bar = poll.querySelector('progress');
        if (bar) { bar.max = Math.max(push.total, 1); bar.value = push.applied + push.failed; }
        var box = poll.querySelector('#push-progress');
        if (box) { box.setAttribute('data-status', push.status); }
        if (push.status !== 'completed' && push.status !== 'failed') { setTimeout(tick, 1000); }
      }, function () { setTimeout(tick, 3000); });
    };
    setTimeout(tick, 500);
  }
}());
