// The page's controls, after the README snippet: upload a chosen file, show what happened.
// `window.demo` lets the test read objects back and try a key outside the user's folder.
const $ = (id) => document.getElementById(id);
$('page-origin').textContent = location.origin;
$('gateway').textContent = STSGATE;

function show(text, kind) {
  $('status').textContent = text;
  $('status').className = kind;
}

function row(table, cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c;
    tr.append(td);
  }
  $(table).append(tr);
}

// Every credential answer the page got, shortened (never the key or the token).
let shownGrant = null;
setInterval(() => {
  if (grant && grant !== shownGrant) {
    shownGrant = grant;
    const until = new Date(grant.ExpiredTime * 1000).toISOString().slice(11, 19);
    const id = `${grant.TmpSecretId.slice(0, 8)}…${grant.TmpSecretId.slice(-6)}`;
    row('grants', [String($('grants').children.length + 1), id, `${until} UTC`, grant.Prefix]);
  }
}, 50);

function describe(err) {
  return err.code && err.code !== 'Error' ? `${err.code}: ${err.message}` : String(err.message || err);
}

$('upload').addEventListener('click', async () => {
  const file = $('file').files[0];
  if (!file) return show('Choose a file first.', 'error');
  show(`Uploading ${file.name}…`, '');
  try {
    const key = await upload(file.name, file);
    row('uploads', [key, String(file.size)]);
    show(`Uploaded ${key}`, 'ok');
  } catch (err) {
    show(`Upload failed: ${describe(err)}`, 'error');
  }
});

window.demo = {
  signIn(jwt, user) {
    currentJwt = jwt;
    $('user').textContent = user;
  },
  /** The object's bytes, base64. */
  async read(key) {
    const { Bucket, Region } = grant;
    const data = await cos.getObject({ Bucket, Region, Key: key, DataType: 'arraybuffer' });
    const bytes = new Uint8Array(data.Body);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  },
  /** A put to any key, with the user's credentials; shows COS's answer. */
  async putAt(key, text) {
    const { Bucket, Region } = grant;
    try {
      await cos.putObject({ Bucket, Region, Key: key, Body: text });
      show(`Uploaded ${key}`, 'ok');
      return 'ok';
    } catch (err) {
      show(`Upload to ${key} failed: ${describe(err)}`, 'error');
      return err.code;
    }
  },
};
