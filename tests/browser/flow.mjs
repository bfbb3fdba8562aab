// Drives headless Chromium through sikkermail's pages for tests/browser.rs:
// the first administrator (bootstrap link), an organisation applied for and
// approved by its representative (link from the e-mail), the applicant
// administrator (settings, CSV import, bulk activation, activation code,
// ordering brugercertifikater), and the employees (activation and
// certificate links from their e-mails, the .p12 download).
//
//   node flow.mjs BASE_URL SINK_DIR OUT_DIR PLAN_JSON
//
// BASE_URL: `http://127.0.0.1:PORT` of `sikkermail serve`; SINK_DIR: the
// folder Postfix's smtp-sink dumps each message into (`-d DIR/...`);
// OUT_DIR: where downloads, screenshots and the mail copies go; PLAN_JSON:
// the data to enter (written by the Rust test, which owns it).
//
// It asserts nothing itself beyond "the page and the element are there":
// every fact the Rust test checks is printed as one line
//   RESULT <key>\t<value>
// (whitespace in values collapsed to one space). On the first failure it
// prints `FAILED <step>\t<message>`, takes a screenshot into OUT_DIR and
// exits 1.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const [base, sinkDir, outDir, planFile] = process.argv.slice(2);
if (!base || !sinkDir || !outDir || !planFile) {
  console.error('usage: node flow.mjs BASE_URL SINK_DIR OUT_DIR PLAN_JSON');
  process.exit(2);
}
const plan = JSON.parse(fs.readFileSync(planFile, 'utf8'));
const TIMEOUT = 15000;
const MAIL_TIMEOUT = 40000;

function result(key, value) {
  const v = String(value ?? '').replace(/\s+/g, ' ').trim();
  console.log(`RESULT ${key}\t${v}`);
}

let current = null; // the page a failure screenshot shows
let stepName = 'start';

async function step(name, fn) {
  stepName = name;
  const t0 = Date.now();
  const r = await fn();
  console.error(`step ${name}: ${Date.now() - t0} ms`);
  return r;
}

// ------------------------------------------------------------ the mail sink

// One smtp-sink dump: its own X-* lines and a Received: field, then the
// message (LF line ends), then one empty line (absent while it is written).
function readDump(file) {
  const text = fs.readFileSync(file, 'latin1');
  if (!text.endsWith('\n\n')) return null;
  const lines = text.split('\n');
  const rcpts = lines
    .filter((l) => l.startsWith('X-Rcpt-Args: <'))
    .map((l) => l.slice('X-Rcpt-Args: <'.length).split('>')[0].toLowerCase());
  let i = lines.findIndex((l) => l.startsWith('Received: '));
  if (i < 0) return null;
  i += 1;
  while (i < lines.length && /^[ \t]/.test(lines[i])) i += 1;
  const message = lines.slice(i).join('\n');
  return { file, rcpts, message };
}

function splitEntity(text) {
  const at = text.indexOf('\n\n');
  const head = at < 0 ? text : text.slice(0, at);
  const body = at < 0 ? '' : text.slice(at + 2);
  const headers = [];
  for (const l of head.split('\n')) {
    if (/^[ \t]/.test(l) && headers.length) headers[headers.length - 1][1] += ' ' + l.trim();
    else {
      const c = l.indexOf(':');
      if (c > 0) headers.push([l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim()]);
    }
  }
  const get = (n) => (headers.find(([k]) => k === n) || [])[1];
  return { get, body };
}

// RFC 2047 encoded words (lettre writes a non-ASCII subject as =?utf-8?b?..?=).
function decodeWords(s) {
  return (s || '')
    .replace(/\?=\s+=\?/g, '?==?')
    .replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=/g, (_, cs, enc, data) => {
      const bytes = enc.toUpperCase() === 'B'
        ? Buffer.from(data, 'base64')
        : Buffer.from(
          data.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (m, h) => String.fromCharCode(parseInt(h, 16))),
          'latin1');
      return bytes.toString(/utf-?8/i.test(cs) ? 'utf8' : 'latin1');
    });
}

function decodeQP(s) {
  const bytes = s
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-Fa-f]{2})/g, (m, h) => String.fromCharCode(parseInt(h, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

// The first text/plain part of a message, decoded; walks multipart/* (the
// gateway wraps lettre's multipart/alternative in a multipart/signed).
function plainText(entityText) {
  const { get, body } = splitEntity(entityText);
  const ct = get('content-type') || 'text/plain';
  if (/^multipart\//i.test(ct)) {
    const m = ct.match(/boundary="?([^";]+)"?/i);
    if (!m) return null;
    const parts = body.split(new RegExp(`^--${m[1].replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?:--)?[ \t]*$`, 'm'));
    for (const p of parts.slice(1, -1)) {
      const t = plainText(p.replace(/^\n/, ''));
      if (t !== null) return t;
    }
    return null;
  }
  if (!/^text\/plain/i.test(ct)) return null;
  const cte = (get('content-transfer-encoding') || '7bit').toLowerCase();
  if (cte === 'quoted-printable') return decodeQP(body);
  if (cte === 'base64') return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  return Buffer.from(body, 'latin1').toString('utf8');
}

const seenMail = new Set();

// Waits for an unseen message to `to` whose subject contains `subject` and
// whose text has a link to `${base}/${kind}/...`; returns that link.
async function mailLink(to, subject, kind, label) {
  const t0 = Date.now();
  const want = new RegExp(`${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/${kind}/[A-Za-z0-9_-]+`);
  for (;;) {
    const names = fs.existsSync(sinkDir) ? fs.readdirSync(sinkDir).sort() : [];
    for (const n of names) {
      const file = path.join(sinkDir, n);
      if (seenMail.has(file)) continue;
      const d = readDump(file);
      if (!d || !d.rcpts.includes(to.toLowerCase())) continue;
      const { get } = splitEntity(d.message);
      const subj = decodeWords(get('subject'));
      if (!subj.includes(subject)) continue;
      const text = plainText(d.message) || '';
      const link = (text.match(want) || [])[0];
      if (!link) throw new Error(`mail ${file} to ${to} (${subj}) has no ${kind} link in its text:\n${text}`);
      seenMail.add(file);
      fs.copyFileSync(file, path.join(outDir, `mail-${label}.txt`));
      result(`mail.${label}.subject`, subj);
      result(`mail.${label}.content_type`, get('content-type'));
      result(`mail.${label}.ms`, Date.now() - t0);
      return link;
    }
    if (Date.now() - t0 > MAIL_TIMEOUT) {
      throw new Error(`no mail to ${to} with subject "${subject}" in ${sinkDir} after ${MAIL_TIMEOUT} ms `
        + `(${names.length} dumps there)`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ------------------------------------------------------------ page helpers

async function open(page, url) {
  current = page;
  const resp = await page.goto(url);
  return resp.status();
}

// Clicks a submit button and waits for the page the form leads to.
async function submit(page, selector) {
  current = page;
  const [resp] = await Promise.all([page.waitForNavigation(), page.click(selector)]);
  return resp ? resp.status() : 0;
}

const text = async (page, sel) => ((await page.textContent(sel, { timeout: TIMEOUT })) || '').trim();
const title = async (page) => (await page.textContent('h1')).trim();

async function newPage(browser) {
  const ctx = await browser.newContext({ acceptDownloads: true, locale: 'da-DK' });
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  return page;
}

async function usersTable(page) {
  return page.$$eval('#users tr', (trs) => trs
    .filter((tr) => tr.querySelector('input[type=checkbox]'))
    .map((tr) => {
      const td = tr.querySelectorAll('td');
      return {
        id: tr.querySelector('input[type=checkbox]').value,
        name: td[1].textContent.trim(),
        email: td[2].textContent.trim(),
        status: td[3].textContent.trim(),
      };
    }));
}

// ------------------------------------------------------------ the flow

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
result('browser.version', browser.version());

let exit = 0;
try {
  // 1. The first administrator, from the bootstrap link `serve` printed.
  await step('bootstrap', async () => {
    const first = await newPage(browser);
    result('bootstrap.form_status', await open(first, plan.bootstrap_url));
    await first.fill('#name', plan.first_admin.name);
    await first.fill('#password', plan.first_admin.password);
    result('bootstrap.status', await submit(first, '#submit'));
    result('bootstrap.ok', await text(first, '#ok'));
    result('bootstrap.again_status', await open(first, plan.bootstrap_url));
    await first.context().close();
  });

  // 2. A second organisation: applied for, accepted by the installation's
  // operator (`sikkermail org accept`, plan.operator), then approved by its
  // representative from the e-mailed link.
  const org = plan.org;
  const admin = await newPage(browser);
  await step('apply', async () => {
    await open(admin, `${base}/apply`);
    await admin.fill('#name', org.name);
    await admin.fill('#cvr', org.cvr);
    await admin.fill('#representative_name', org.representative_name);
    await admin.fill('#representative_email', org.representative_email);
    await admin.fill('#admin_name', org.admin_name);
    await admin.fill('#admin_password', org.admin_password);
    result('apply.status', await submit(admin, '#submit'));
    result('apply.ok', await text(admin, '#ok'));
  });

  await step('login-before-approval', async () => {
    await open(admin, `${base}/admin/login`);
    await admin.fill('#name', org.admin_name);
    await admin.fill('#password', org.admin_password);
    result('pending.status', await submit(admin, '#submit'));
    result('pending.url', admin.url());
    result('pending.err', await text(admin, '#err'));
  });

  await step('operator-accept', async () => {
    const op = plan.operator;
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('SIKKERMAIL_')) delete env[k];
    const pending = execFileSync(op.bin, ['org', 'pending', '--data-dir', op.data_dir], { env, encoding: 'utf8' });
    const line = pending.split('\n').find((l) => l.split('\t')[1] === org.cvr);
    if (!line) throw new Error(`no application for CVR ${org.cvr} in: ${pending}`);
    const id = line.split('\t')[0];
    result('operator.pending', line);
    execFileSync(op.bin, ['org', 'accept', id, '--data-dir', op.data_dir, '--config', op.config,
      '--public-url', base], { env, encoding: 'utf8' });
  });

  await step('approve', async () => {
    const link = await mailLink(org.representative_email, 'Godkend', 'approve', 'approval');
    const rep = await newPage(browser);
    result('approve.form_status', await open(rep, link));
    await rep.check('#confirm');
    result('approve.status', await submit(rep, '#submit'));
    result('approve.ok', await text(rep, '#ok'));
    result('approve.again_status', await open(rep, link));
    await rep.context().close();
  });

  // 3. The applicant administrator: settings, then the CSV import.
  await step('settings', async () => {
    result('approved.users_status', await open(admin, `${base}/admin/users`));
    await open(admin, `${base}/admin/settings`);
    await admin.check('#allow_user_certificates');
    result('settings.status', await submit(admin, '#save'));
    result('settings.ok', await text(admin, '#ok'));
    await open(admin, `${base}/admin/settings`);
    result('settings.allow_user_certificates', await admin.isChecked('#allow_user_certificates'));
  });

  await step('import', async () => {
    await open(admin, `${base}/admin/import`);
    await admin.setInputFiles('#file', plan.csv_file);
    result('import.status', await submit(admin, '#submit'));
    result('import.summary', await text(admin, '#summary'));
    const rows = await admin.$$eval('#imported tr.imported', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()).join('|')));
    for (const r of rows) result('import.imported', r);
    const errs = await admin.$$eval('#errors tr.row-error', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()).join('|')));
    for (const e of errs) result('import.error', e);
    await admin.screenshot({ path: path.join(outDir, 'import-report.png'), fullPage: true });
  });

  // 4. Bulk activation of the users ready for it, from the users page.
  const byEmail = {};
  await step('bulk-activate', async () => {
    await open(admin, `${base}/admin/users`);
    for (const u of await usersTable(admin)) {
      byEmail[u.email] = u;
      result('users.row', `${u.id}|${u.name}|${u.email}|${u.status}`);
    }
    await open(admin, `${base}/admin/users?status=ready`);
    const ready = await usersTable(admin);
    for (const u of ready) {
      result('ready.row', u.email);
      await admin.check(`#select-${u.id}`);
    }
    await admin.selectOption('#means', plan.means);
    result('activate.status', await submit(admin, '#activate'));
    result('activate.receipt', await text(admin, '#receipt'));
    await admin.screenshot({ path: path.join(outDir, 'receipt.png'), fullPage: true });
  });

  const codes = {};
  await step('activation-code', async () => {
    for (const e of plan.employees.filter((x) => x.needs_code)) {
      await open(admin, `${base}/admin/users/${byEmail[e.email].id}`);
      result(`user.${e.email}.status_after_activation`, await text(admin, '#status'));
      result('code.status', await submit(admin, '#code'));
      codes[e.email] = await text(admin, '#activation-code');
      result(`user.${e.email}.code`, codes[e.email]);
    }
  });

  // 5. The employees activate themselves from their e-mails.
  for (const e of plan.employees) {
    await step(`employee-activation ${e.email}`, async () => {
      const link = await mailLink(e.email, 'Aktivér din bruger', 'activate', `activation-${e.email}`);
      const emp = await newPage(browser);
      result(`activate.${e.email}.form_status`, await open(emp, link));
      const hasCode = (await emp.$('#code')) !== null;
      result(`activate.${e.email}.code_field`, hasCode);
      if (hasCode) await emp.fill('#code', codes[e.email] || '');
      await emp.fill('#password', e.password);
      await emp.fill('#password2', e.password);
      await emp.check('#accept');
      result(`activate.${e.email}.status`, await submit(emp, '#submit'));
      result(`activate.${e.email}.ok`, await text(emp, '#ok'));
      await emp.context().close();
      await open(admin, `${base}/admin/users/${byEmail[e.email].id}`);
      result(`user.${e.email}.status`, await text(admin, '#status'));
    });
  }

  // 6. Brugercertifikater: ordered by the administrator, collected by the
  // employee from the e-mailed link (one file modern, one compatible).
  for (const e of plan.employees.filter((x) => x.flavour)) {
    await step(`order ${e.email}`, async () => {
      await open(admin, `${base}/admin/users/${byEmail[e.email].id}`);
      result(`order.${e.email}.status`, await submit(admin, '#order'));
      result(`order.${e.email}.ok`, await text(admin, '#ok'));
    });
    await step(`collect ${e.email}`, async () => {
      const link = await mailLink(e.email, 'Hent dit brugercertifikat', 'certificate', `certificate-${e.email}`);
      const emp = await newPage(browser);
      result(`collect.${e.email}.form_status`, await open(emp, link));
      await emp.fill('#password', e.password);
      await emp.check(`#${e.flavour}`);
      await emp.check('#accept');
      // The result page clicks its download link by itself after 500 ms:
      // wait for the download from before the form is sent.
      const downloaded = emp.waitForEvent('download', { timeout: TIMEOUT });
      result(`collect.${e.email}.status`, await submit(emp, '#submit'));
      const password = await text(emp, '#p12-password');
      const href = await emp.getAttribute('#download', 'href');
      const dl = await downloaded;
      const file = path.join(outDir, `${e.email}.p12`);
      await dl.saveAs(file);
      result(`collect.${e.email}.password`, password);
      result(`collect.${e.email}.suggested`, dl.suggestedFilename());
      result(`collect.${e.email}.download_url`, dl.url());
      result(`collect.${e.email}.href`, href);
      result(`collect.${e.email}.file`, file);
      await emp.screenshot({ path: path.join(outDir, `certificate-${e.email}.png`), fullPage: true });
      // The download happens once; the link from the e-mail is used up.
      const again = await emp.context().request.get(new URL(href, base).toString());
      result(`collect.${e.email}.download_again_status`, again.status());
      result(`collect.${e.email}.link_again_status`, await open(emp, link));
      result(`collect.${e.email}.link_again_title`, await title(emp));
      await emp.context().close();
    });
  }
  result('done', 'true');
} catch (err) {
  exit = 1;
  const msg = String(err && err.stack ? err.stack : err).replace(/\x1b\[[0-9;]*m/g, '');
  let shot = '';
  if (current && !current.isClosed()) {
    shot = path.join(outDir, `failed-${stepName.replace(/[^A-Za-z0-9.@-]+/g, '_')}.png`);
    try {
      await current.screenshot({ path: shot, fullPage: true });
      console.error(`page at failure: ${current.url()}\n${await current.innerText('body')}`);
    } catch (e) {
      shot = `(no screenshot: ${e})`;
    }
  }
  console.log(`FAILED ${stepName}\t${msg.replace(/\s+/g, ' ')}\tscreenshot ${shot}`);
  console.error(msg);
} finally {
  await browser.close();
}
process.exit(exit);
