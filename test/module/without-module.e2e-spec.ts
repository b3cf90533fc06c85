// A controller carrying @Idempotent() in a module that does not import IdempotencyModule:
// its methods can still be unit-tested directly, and starting the app fails at once with
// the fix in the message (not with Nest's generic "can't resolve dependencies").
import { Controller, Post } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Idempotent } from '../../src/index.js';

@Controller('charges')
class ChargesController {
  @Post()
  @Idempotent()
  charge() {
    return { charged: true };
  }
}

describe('@Idempotent() without IdempotencyModule', () => {
  it('compiles, so the controller can be unit-tested by calling its methods', async () => {
    const moduleRef = await Test.createTestingModule({
      controllers: [ChargesController],
    }).compile();
    expect(moduleRef.get(ChargesController).charge()).toEqual({ charged: true });
    await moduleRef.close();
  });

  it('refuses to start an application, saying what to import', async () => {
    const moduleRef = await Test.createTestingModule({
      controllers: [ChargesController],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await expect(app.init()).rejects.toThrow(
      /IdempotencyModule is not imported\. Import IdempotencyModule\.forRoot\(\)/,
    );
    await app.close().catch(() => undefined);
  });
});
