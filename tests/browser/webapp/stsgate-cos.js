// cos-js-sdk-v5 in a web page, with temporary credentials from stsgate.
// Defined before this script: STSGATE (the gateway's URL), APP (the app's slug), COS_OPTIONS
// ({} for real COS; stsgate dev's emulator: { Protocol: 'http:', Domain: '127.0.0.1:9100/{Bucket}' })
// and getJwt(), which returns the signed-in user's current JWT, kept in memory.
let grant = null; // the latest answer: the credential, its Bucket and Region, the user's Prefix
let grantError = null; // why the latest request for credentials failed, if it did

async function fetchGrant() {
  const res = await fetch(`${STSGATE}/v1/apps/${APP}/credentials?format=cos-js`, {
    headers: { Authorization: `Bearer ${getJwt()}` },
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`stsgate ${res.status} ${body.error.code}: ${body.error.message}`);
  grant = body;
  return body;
}

const cos = new COS({
  ...COS_OPTIONS,
  // The SDK calls this whenever its credential has less than a minute left; the one upload()
  // has just fetched is used while it has more than that.
  getAuthorization(options, callback) {
    const fresh = grant && grant.ExpiredTime - Date.now() / 1000 > 60;
    (fresh ? Promise.resolve(grant) : fetchGrant()).then(
      (answer) => {
        grantError = null;
        callback(answer); // TmpSecretId, TmpSecretKey, SecurityToken, StartTime, ExpiredTime
      },
      (err) => {
        grantError = err; // a 401, a 429, or the browser's CORS refusal ("Failed to fetch")
        callback({}); // the SDK then fails the call
      },
    );
  },
});

// Uploads `body` (a File, Blob or string) as `name` in the user's own folder; returns its key.
async function upload(name, body) {
  const { Bucket, Region, Prefix } = grant || (await fetchGrant());
  const Key = Prefix + name;
  try {
    await cos.putObject({ Bucket, Region, Key, Body: body });
  } catch (err) {
    throw grantError || err; // err.code is COS's error code, e.g. AccessDenied
  }
  return Key;
}
