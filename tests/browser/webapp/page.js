// The page's own part, before the README snippet (stsgate-cos.js): the signed-in user's JWT,
// held in memory only, as a real app's sign-in code would.
let currentJwt = null;
function getJwt() {
  return currentJwt;
}
