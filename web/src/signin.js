// Sign-in: exchanges a username and password for a session (access and refresh tokens).

import { signIn, ApiError } from './api.js';
import { h, fill, field } from './dom.js';

export function signInPage(root, next) {
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'panel narrow', 'aria-labelledby': 'sign-in-title', novalidate: true },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    field('username', 'Username', h('input', { type: 'text', autocomplete: 'username', required: true })),
    field('password', 'Password', h('input', { type: 'password', autocomplete: 'current-password', required: true })),
    error,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      await signIn(form.elements.namedItem('username').value.trim(), form.elements.namedItem('password').value);
      location.hash = next.startsWith('#') ? next : '#/listings';
    } catch (failure) {
      error.textContent = failure instanceof ApiError && failure.status === 401
        ? 'The username or the password is wrong.' : `Signing in failed: ${failure.message}`;
    } finally {
      button.disabled = false;
    }
  });
  fill(root, form);
  form.querySelector('input').focus();
  return () => {};
}
