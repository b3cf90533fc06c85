import { multipartBody } from './idempotency-multipart.fingerprint.js';

describe('multipartBody', () => {
  const form = (boundary: string, file: string) =>
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n${file}\r\n` +
        `--${boundary}--\r\n`,
    );
  const parts = (
    boundary: string,
    file: string,
    type = `multipart/form-data; boundary=${boundary}`,
  ) => multipartBody(type, form(boundary, file));

  it('compares the parts without the boundary a client picks per send', () => {
    expect(parts('XyZ', 'content')).toEqual(parts('----formdata-undici-0123', 'content'));
    expect(parts('XyZ', 'content')).toEqual(
      parts('XyZ', 'content', 'multipart/form-data; boundary="XyZ"'),
    );
    expect(parts('XyZ', 'content')).not.toEqual(parts('XyZ', 'other'));
  });

  it('keeps apart bodies whose content holds the other body’s delimiter', () => {
    expect(parts('A', 'x\r\n--B')).not.toEqual(parts('B', 'x\r\n--B'));
  });

  it('leaves a body without exactly one plain boundary to be compared as bytes', () => {
    expect(multipartBody('multipart/form-data', form('A', 'x'))).toBeUndefined();
    expect(
      multipartBody('multipart/form-data; boundary=A; boundary=B', form('A', 'x')),
    ).toBeUndefined();
  });
});
